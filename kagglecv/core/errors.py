"""The errors kagglecv raises for people to read.

Every message names the file, row or key and the value, worded "expected X, got Y" where it fits. The CLI prints
it as one red line (several lines only when several independent problems were found) and exits non-zero.
"""

import importlib.util


class KagglecvError(Exception):
    """A problem the user can fix: bad input, a bad config, a file in the wrong state."""


class ConfigError(KagglecvError):
    """The YAML config or a ``--set`` override is invalid."""


class DataError(KagglecvError):
    """The competition data (CSV rows, labels, image files) is invalid."""


class OutputError(KagglecvError):
    """An output cannot be written: refused location, full disk, no permission, or another writer holds it."""


def summarize(items: list, limit: int = 5, quote: bool = False) -> str:
    """Join the first ``limit`` items (``repr``-quoted when ``quote``) and say how many more there are."""
    shown = ", ".join(repr(str(item)) if quote else str(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def require_extra(module: str, extra: str, what: str) -> None:
    """A clear error, before any work, when ``what`` needs an optional extra that is not installed."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a module blocked in sys.modules, or a broken install
        found = None
    if found is None:
        raise KagglecvError(f"{what} needs {module}: pip install 'kagglecv[{extra}]'")
