"""The second stage: models fitted on the image runs' out-of-fold predictions and the table beside the images, on
the same folds (``kagglecv stack``). No torch: LightGBM (XGBoost as an extra), ridge/logistic and SVR, each saved in
its own library's text format or as plain numbers, never pickled."""
