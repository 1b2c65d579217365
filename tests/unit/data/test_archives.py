"""Archives in a competition folder unpacked into a view in the working folder, never into the input: real CIFAR-10
JPEGs in a zip (members under train/) and a tar.gz (members at its root), reused while unchanged, and every hostile
member refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.data.archives import STAMP, unpacked_view
from tests.conftest import shared_dataset


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def competition(tmp_path) -> tuple[Path, list[Path], list[Path]]:
    """comp/: train.csv and sample_submission.csv, train.zip (train/<id>.jpg), test.tar.gz (<id>.jpg at its root)."""
    source = shared_dataset("cifar10-mini")
    table = pd.read_csv(source / "train.csv", dtype=str)
    train, test = [source / "train" / f"{i}.jpg" for i in table["id"][:12]], [source / "train" / f"{i}.jpg"
                                                                             for i in table["id"][12:18]]
    folder = tmp_path / "comp"
    folder.mkdir()
    table.head(12).to_csv(folder / "train.csv", index=False)
    (folder / "sample_submission.csv").write_text("id,label\n")
    with zipfile.ZipFile(folder / "train.zip", "w") as archive:
        for path in train:
            archive.write(path, f"train/{path.name}")
    with tarfile.open(folder / "test.tar.gz", "w:gz") as archive:
        for path in test:
            archive.add(path, path.name)
    return folder, train, test


def snapshot(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): digest(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def test_the_view_holds_every_image_byte_for_byte_and_links_the_rest(competition, tmp_path):
    folder, train, test = competition
    before = snapshot(folder)
    view = unpacked_view(folder, tmp_path / "work" / "comp.unpacked")
    assert snapshot(folder) == before, "nothing is written into the input"
    assert (view / "train.csv").is_symlink() and (view / "train.csv").resolve() == (folder / "train.csv").resolve()
    assert sorted(p.name for p in (view / "train").iterdir()) == sorted(p.name for p in train)
    assert sorted(p.name for p in (view / "test").iterdir()) == sorted(p.name for p in test)  # named after the archive
    assert all(digest(view / "train" / p.name) == digest(p) for p in train)
    assert all(digest(view / "test" / p.name) == digest(p) for p in test)
    assert not (view / "train.zip").exists() and not (view / "test.tar.gz").exists()


def test_an_unchanged_archive_reuses_the_view_and_a_changed_one_rebuilds_it(competition, tmp_path):
    folder, _, _ = competition
    into = tmp_path / "comp.unpacked"
    view = unpacked_view(folder, into)
    (view / "train" / "mine.txt").write_text("kept while nothing changed")
    assert unpacked_view(folder, into) == into and (into / "train" / "mine.txt").is_file()
    stat = (folder / "train.zip").stat()
    os.utime(folder / "train.zip", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    unpacked_view(folder, into)
    assert not (into / "train" / "mine.txt").exists() and (into / STAMP).is_file()


def test_a_folder_without_archives_is_its_own_view_and_a_foreign_folder_is_never_replaced(competition, tmp_path):
    folder, _, _ = competition
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.csv").write_text("id,label\n")
    assert unpacked_view(plain, tmp_path / "plain.unpacked") == plain and not (tmp_path / "plain.unpacked").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(KagglecvError, match="is not a folder kagglecv unpacked"):
        unpacked_view(folder, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_an_archive_inside_the_archive_is_unpacked_too(competition, tmp_path):
    folder, train, _ = competition
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for path in train[:3]:
            archive.write(path, path.name)
    (folder / "train.zip").unlink()
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        archive.writestr("images/readme.txt", "the images are in the zip beside me")
        archive.writestr("images/part1.zip", inner.getvalue())
    view = unpacked_view(folder, tmp_path / "comp.unpacked")
    assert sorted(p.name for p in (view / "images" / "part1").iterdir()) == sorted(p.name for p in train[:3])
    assert not (view / "images" / "part1.zip").exists()


def zip_with(folder: Path, name: str, member: str, data: bytes = b"x", *, compression=zipfile.ZIP_STORED,
             mode: int | None = None) -> None:
    with zipfile.ZipFile(folder / name, "w", compression=compression) as archive:
        info = zipfile.ZipInfo(member)
        info.compress_type = compression
        if mode is not None:
            info.external_attr = mode << 16
        archive.writestr(info, data)


@pytest.mark.parametrize("member, message", [
    ("../escape.txt", "leaves the folder"), ("/tmp/escape.txt", "leaves the folder"),
    ("C:/escape.txt", "leaves the folder"), ("a\\..\\..\\escape.txt", "leaves the folder"),
])
def test_a_member_leaving_the_folder_is_refused_and_nothing_is_written(tmp_path, member, message):
    folder = tmp_path / "comp"
    folder.mkdir()
    zip_with(folder, "train.zip", member)
    with pytest.raises(DataError, match=f"train.zip: member name .* {message}"):
        unpacked_view(folder, tmp_path / "work" / "comp.unpacked")
    assert not (tmp_path / "work" / "comp.unpacked").exists() and not (tmp_path / "escape.txt").exists()
    assert not list((tmp_path / "work").glob("*"))  # the folder being built is gone too


def test_links_bombs_and_7z_are_refused_in_one_line(tmp_path):
    folder = tmp_path / "comp"
    folder.mkdir()
    zip_with(folder, "train.zip", "train/link", b"/etc/passwd", mode=0o120777)
    with pytest.raises(DataError, match="'train/link' is a link or a device"):
        unpacked_view(folder, tmp_path / "v")
    zip_with(folder, "train.zip", "train/zeros.bin", bytes(10 << 20), compression=zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match="zip bomb"):
        unpacked_view(folder, tmp_path / "v")
    (folder / "train.zip").unlink()
    with tarfile.open(folder / "test.tar", "w") as archive:
        info = tarfile.TarInfo("test/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(DataError, match="'test/link' is a link or a device"):
        unpacked_view(folder, tmp_path / "v")
    (folder / "test.tar").unlink()
    (folder / "train.json.7z").write_bytes(b"7z\xbc\xaf\x27\x1c")
    with pytest.raises(DataError, match="train.json.7z: a .7z archive, which kagglecv does not unpack"):
        unpacked_view(folder, tmp_path / "v")
    assert not (tmp_path / "v").exists()
