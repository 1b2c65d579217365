"""kagglecv: Kaggle-style image classification from data to submission.

The stage functions are the public surface; each is also a CLI command. They are imported on first use, so
``import kagglecv`` (and ``kagglecv --help``) stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "core.config", "load_config": "core.config", "validate_config": "core.config",
    "CompetitionData": "data.table", "load_train": "data.load", "load_test": "data.load",
    "KagglecvError": "core.errors", "ConfigError": "core.errors", "DataError": "core.errors",
    "make_folds": "stages.folds", "assign_folds": "stages.folds", "FoldsResult": "stages.folds",
    "create_splitter": "data.splitters",
    "build_augment": "nn.images", "decode_image": "data.decoding",
    "create_model": "nn.models",
    "train_run": "stages.train",
    "predict_run": "stages.predict",
    "score_run": "stages.score", "score_oof_file": "stages.score", "score_submission": "stages.score",
    "build_report": "stages.report",
    "make_ensemble": "stages.ensemble", "hill_climb": "core.blending", "make_stack": "stages.stack",
    "write_submission": "stages.submit",
    "run_pipeline": "workflows.run",
    "run_demo": "workflows.demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kagglecv' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
