"""Where and how kagglecv writes: atomic files and folders, output containment, one writer per output, hashing.

Every file kagglecv writes goes to a temporary name in the destination folder and is then ``os.replace``d onto
its final name (as timm's ``CheckpointSaver`` does), so a killed job leaves either the old file or the new one,
never half of one. A multi-file output (an ensemble folder) is built in a temporary folder and renamed into place.
A name the user gives for an output (an ensemble or submission name) is checked before anything is written: a
plain name, resolving inside the folder it must live in, and never onto one of the command's inputs. An output
that two processes could write at once is guarded by an ``fcntl`` lock (the ``filelock`` package), which the
operating system releases when its process dies, so a stale lock never blocks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import pandas as pd
from filelock import FileLock, Timeout

from kagglecv.core.errors import OutputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would have given; mkstemp makes 0600


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with _named_os_errors(path):
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; expected a file to write")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    try:
        with _named_os_errors(path):
            os.chmod(tmp_name, FILE_MODE)
            with open(tmp_name, mode, **kwargs) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def _named_os_errors(path: Path) -> Iterator[None]:
    """An operating-system error while writing (a full disk, no permission) becomes one line naming the file."""
    try:
        yield
    except OSError as exc:
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise OutputError(f"{path}: cannot write: {reason}; nothing was written there") from None


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; on success rename it to ``path``.

    A kill at any moment leaves either no ``path`` (or the previous one, when ``replace``) or the complete new one:
    never a folder with some files. Without ``replace`` an existing ``path`` is an error.
    """
    path = Path(path)
    with _named_os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
    try:
        yield building
        with _named_os_errors(path):
            os.chmod(building, 0o777 & ~_current_umask())
            if path.exists():
                if not replace:
                    raise OutputError(f"{path}: exists already")
                retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, retired / path.name)
                os.replace(building, path)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


@contextlib.contextmanager
def output_lock(lock_path: str | os.PathLike, what: str, wait: float = 0) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` while writing ``what``; a second writer gets a clear error at once,
    or, with ``wait`` seconds, takes its turn (writers of a shared log) and gets the error only after that long."""
    lock_path = Path(lock_path)
    with _named_os_errors(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        waited = f" for {wait:g} s" if wait else ""
        raise OutputError(f"{what} is being written by another kagglecv process{waited} (lock {lock_path}); wait for "
                          "it to finish, then run this again") from None
    except OSError as exc:
        raise OutputError(f"{lock_path}: cannot lock: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def write_bytes_keep_previous(path: str | os.PathLike, data: bytes, previous: str | os.PathLike) -> None:
    """Write ``path`` atomically, first moving the current ``path`` to ``previous``.

    A kill at any moment leaves a complete ``path`` or a complete ``previous`` (or both).
    """
    path = Path(path)
    with atomic_open(path.with_name(path.name + ".next"), "wb") as handle:
        handle.write(data)
    with _named_os_errors(path):
        if path.exists():
            os.replace(path, previous)
        os.replace(path.with_name(path.name + ".next"), path)


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str = ".") -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder`` (``.<name>.<random>.tmp``,
    ``.tmpdir``, ``.old``); with ``prefix``, only those of one output (``.<name>.``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(path for pattern in ("*.tmp", "*.tmpdir", "*.old") for path in folder.glob(f"{prefix}{pattern}")
                   if path.name.startswith(".") and not path.is_symlink())
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return stale


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, float_format: str | None = None) -> None:
    """Write ``frame`` without its index, ``\\n`` line ends, atomically."""
    write_text(path, frame.to_csv(index=False, lineterminator="\n", float_format=float_format))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
