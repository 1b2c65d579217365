"""Archives inside a competition folder (Aerial Cactus's ``train.zip`` and ``test.zip``, iNaturalist's ``.tar.gz``),
unpacked once into a folder of the working directory, never into the input.

``unpacked_view(folder, into)`` makes ``into``: a link to every entry of the competition folder that is not an
archive, and each archive's content (an archive whose members share one top folder is unpacked as it is, else into a
folder named after it; an archive found at the top of what was unpacked is unpacked in turn, one level). A stamp
records each archive's name, size and modification time: a second call with the archives unchanged reuses the view,
a changed archive rebuilds it. The view is built beside and renamed into place, so it is whole or absent.

An archive is someone else's input. Before anything is written: no member name may be absolute, hold ``..``, a
drive, a backslash or a NUL; a member must be a regular file or a folder (no link, no device); the members' total
size must fit :data:`MAX_UNPACKED_BYTES` and the free disk, their count :data:`MAX_MEMBERS`, and a member may not
expand more than :data:`MAX_RATIO` times (a zip bomb). ``.zip`` and ``.tar`` / ``.tar.gz`` / ``.tgz`` are read with
the standard library; ``.7z`` is refused with the command that unpacks it (py7zr, the Python reader, is LGPL).
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.files import atomic_folder

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
REFUSED_SUFFIXES = (".7z", ".rar")
MAX_UNPACKED_BYTES = 1 << 40   # 1 TiB: more than any Kaggle image competition ships
MAX_MEMBERS = 10_000_000
MAX_RATIO = 1_000              # deflate reaches about 1,000:1 at best; a bomb goes far past it
STAMP = ".kagglecv-unpacked.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str       # a relative POSIX path, checked
    size: int
    is_dir: bool


def archives_in(folder: Path) -> list[Path]:
    """The archives at the top of ``folder``; a ``.7z`` or ``.rar`` is one error naming it."""
    found = sorted(path for path in Path(folder).iterdir() if path.is_file() and _suffix(path) in ARCHIVE_SUFFIXES)
    refused = sorted(path.name for path in Path(folder).iterdir() if _suffix(path) in REFUSED_SUFFIXES)
    if refused:
        raise DataError(f"{Path(folder) / refused[0]}: a {_suffix(Path(refused[0]))} archive, which kagglecv does not "
                        "unpack (its Python reader is LGPL); unpack it first, e.g. `7z x FILE -oFOLDER`")
    return found


def unpacked_view(folder: Path, into: Path) -> Path:
    """``folder`` with its archives unpacked, as the folder ``into`` (made or reused); ``folder`` itself when it holds
    no archive."""
    folder = Path(folder)
    archives = archives_in(folder)
    if not archives:
        return folder
    stamp = _stamp(archives)
    if into.is_symlink() or (into.exists() and not (into / STAMP).is_file()):
        raise KagglecvError(f"{into}: exists and is not a folder kagglecv unpacked; move it, or run from elsewhere")
    if (into / STAMP).is_file() and _read_stamp(into / STAMP) == stamp:
        return into
    with atomic_folder(into, replace=True) as building:
        for entry in sorted(Path(folder).iterdir()):
            if entry not in archives:
                (building / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        for archive in archives:
            _unpack(archive, building, depth=1)
        (building / STAMP).write_text(json.dumps(stamp))
    return into


def _unpack(archive: Path, into: Path, depth: int) -> None:
    members = list(_members(archive))
    if not members:  # an empty archive adds nothing
        return
    _check_bounds(archive, members, into)
    tops = {PurePosixPath(member.name).parts[0] for member in members}
    single_folder = len(tops) == 1 and any(member.is_dir or "/" in member.name for member in members)
    target = into if single_folder else into / _stem(archive)
    clash = [top for top in tops if (target / top).exists() or (target / top).is_symlink()]
    if clash:
        raise DataError(f"{archive}: would unpack over {clash[0]!r}, which the competition folder already holds")
    _extract(archive, members, target)
    root = target / next(iter(tops)) if single_folder else target
    for nested in archives_in(root) if depth < 2 else []:  # an archive inside the archive: one level more
        _unpack(nested, root, depth + 1)
        nested.unlink()


def _members(archive: Path) -> Iterator[Member]:
    """The members of ``archive``, each name and kind checked; one error naming the archive and the member."""
    try:
        if _suffix(archive) == ".zip":
            with zipfile.ZipFile(archive) as opened:
                for info in opened.infolist():
                    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix mode recorded (Windows, Python)
                    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                        raise DataError(f"{archive}: member {info.filename!r} is a link or a device; refused")
                    if not info.is_dir() and info.file_size > MAX_RATIO * max(info.compress_size, 1) + CHUNK:
                        raise DataError(f"{archive}: member {info.filename!r} expands {info.file_size:,} bytes from "
                                        f"{info.compress_size:,}: past {MAX_RATIO}:1, a zip bomb; refused")
                    yield Member(_checked_name(archive, info.filename), info.file_size, info.is_dir())
            return
        with tarfile.open(archive, "r:*") as opened:
            for info in opened:
                if not (info.isreg() or info.isdir()):
                    raise DataError(f"{archive}: member {info.name!r} is a link or a device; refused")
                yield Member(_checked_name(archive, info.name), info.size, info.isdir())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot read the archive: {' '.join(str(exc).split())[:160]}") from None


def _checked_name(archive: Path, name: str) -> str:
    path = PurePosixPath(name)
    if (not name or "\\" in name or "\x00" in name or path.is_absolute() or ".." in path.parts
            or (path.parts and ":" in path.parts[0])):
        raise DataError(f"{archive}: member name {name!r} leaves the folder it is unpacked into; refused")
    return path.as_posix().rstrip("/") or "."


def _check_bounds(archive: Path, members: list[Member], into: Path) -> None:
    total = sum(member.size for member in members)
    if len(members) > MAX_MEMBERS:
        raise DataError(f"{archive}: {len(members):,} members, more than {MAX_MEMBERS:,}; refused")
    if total > MAX_UNPACKED_BYTES or total > MAX_RATIO * max(archive.stat().st_size, 1) + CHUNK:
        raise DataError(f"{archive}: its members add up to {total:,} bytes from {archive.stat().st_size:,}: past the "
                        f"bounds ({MAX_RATIO}:1, {MAX_UNPACKED_BYTES:,} bytes); refused")
    free = shutil.disk_usage(into).free
    if total > free:
        raise DataError(f"{archive}: needs {total:,} bytes unpacked, {free:,} are free under {into}")


def _extract(archive: Path, members: list[Member], target: Path) -> None:
    """Every member written under ``target``, at most its declared size (a member that holds more is an error)."""
    declared = {member.name: member for member in members}
    if _suffix(archive) == ".zip":
        with zipfile.ZipFile(archive) as opened:
            for info in opened.infolist():
                _write_member(archive, declared[_checked_name(archive, info.filename)], target,
                              None if info.is_dir() else opened.open(info))
        return
    with tarfile.open(archive, "r:*") as opened:
        for info in opened:
            _write_member(archive, declared[_checked_name(archive, info.name)], target,
                          opened.extractfile(info) if info.isreg() else None)


def _write_member(archive: Path, member: Member, target: Path, stream) -> None:
    path = target / member.name
    if member.is_dir or stream is None:
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with stream, open(path, "xb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > member.size:
                raise DataError(f"{archive}: member {member.name!r} holds more than the {member.size:,} bytes it "
                                "declares; refused")
            out.write(chunk)


def _stamp(archives: list[Path]) -> list[list]:
    return [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in archives]


def _read_stamp(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((suffix for suffix in (".tar.gz", ".tgz", *ARCHIVE_SUFFIXES[:2], *REFUSED_SUFFIXES)
                 if name.endswith(suffix)), "")


def _stem(archive: Path) -> str:
    return archive.name[: len(archive.name) - len(_suffix(archive))] or "archive"

