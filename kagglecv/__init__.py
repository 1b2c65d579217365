"""kagglecv: Kaggle-style image classification from data to submission."""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .data import CompetitionData, load_test, load_train  # noqa: E402
from .errors import ConfigError, DataError, KagglecvError  # noqa: E402
from .folds import FoldsResult, assign_folds, make_folds  # noqa: E402
from .splitters import create_splitter  # noqa: E402

__all__ = [
    "CompetitionData",
    "Config",
    "ConfigError",
    "DataError",
    "FoldsResult",
    "KagglecvError",
    "assign_folds",
    "create_splitter",
    "load_config",
    "load_test",
    "load_train",
    "make_folds",
]
