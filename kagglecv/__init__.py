"""kagglecv: Kaggle-style image classification from data to submission.

The stage functions are the public surface; each is also a CLI command. They are imported on first use, so
``import kagglecv`` (and ``kagglecv --help``) stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config", "load_config": "config", "validate_config": "config",
    "CompetitionData": "data", "load_train": "data", "load_test": "data",
    "KagglecvError": "errors", "ConfigError": "errors", "DataError": "errors",
    "make_folds": "folds", "assign_folds": "folds", "FoldsResult": "folds",
    "create_splitter": "splitters",
    "build_augment": "images", "decode_image": "images",
    "create_model": "models",
    "train_run": "train",
    "predict_run": "predict",
    "score_run": "score", "score_oof_file": "score", "score_submission": "score",
    "build_report": "report",
    "make_ensemble": "ensemble", "hill_climb": "ensemble",
    "write_submission": "submission",
    "run_pipeline": "pipeline",
    "run_demo": "demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kagglecv' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
