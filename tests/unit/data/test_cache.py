"""``data.cache``: cached images equal decoded ones, a changed table or file makes a new cache, images of several sizes
are refused, and data-loader workers share the one memory-mapped cache."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import kagglecv.data.cache as cache
from kagglecv.core.errors import DataError
from kagglecv.data.cache import (
    cache_key,
    check_images_once,
    remember_checked,
    with_cached_images,
)
from kagglecv.data.decoding import check_images, decode_image, load_image
from kagglecv.data.table import CompetitionData


def competition(tmp_path, write_images, count=12, size=(20, 14)):
    ids = [f"i{index:02d}" for index in range(count)]
    paths = write_images(tmp_path / "train", ids, size=size, ext="jpg")
    table = tmp_path / "train.csv"
    pd.DataFrame({"id": ids, "label": "a"}).to_csv(table, index=False)
    return CompetitionData(np.array(ids, dtype=object), paths, "multiclass", ["a"], np.zeros(count, int), None, table)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_images_equal_decoded_ones_in_every_channel_layout(tmp_path, write_images, mode):
    data = competition(tmp_path, write_images)
    cached = with_cached_images(data, mode, tmp_path / "cache")
    for row, path in enumerate(data.images):
        np.testing.assert_array_equal(load_image(cached.images, row), decode_image(path))
        np.testing.assert_array_equal(load_image(cached.images, row, 1), load_image(data.images, row, 1))
    assert (list((tmp_path / "cache").glob("*.npy")) != []) == (mode == "disk")
    assert with_cached_images(data, "off", tmp_path / "cache") is data


def test_a_changed_table_or_file_makes_a_new_cache_never_stale_pixels(tmp_path, write_images):
    data = competition(tmp_path, write_images)
    first = cache_key(data.images, data.source)
    cached = with_cached_images(data, "disk", tmp_path / "cache")
    assert cache_key(data.images, data.source) == first, "the same inputs, the same cache"
    changed = np.full((20, 14, 3), 200, dtype=np.uint8)
    Image.fromarray(changed).save(data.images[3])  # same size, same name, new pixels
    stat = os.stat(data.images[3])
    os.utime(data.images[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    assert cache_key(data.images, data.source) != first
    again = with_cached_images(data, "disk", tmp_path / "cache")
    np.testing.assert_array_equal(load_image(again.images, 3), decode_image(data.images[3]))
    assert not np.array_equal(load_image(cached.images, 3), load_image(again.images, 3))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    data.source.write_text(data.source.read_text().replace(",a\n", ",a \n", 1))
    assert cache_key(data.images, data.source) not in (first, cache_key([], data.source))


def test_images_of_several_sizes_are_one_error_naming_them(tmp_path, write_images):
    data = competition(tmp_path, write_images)
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(data.images[5])
    for mode in ("memory", "disk"):
        with pytest.raises(DataError, match=r"data.cache needs images of one size \(14x20 first\); 1 differ: "
                                             r"i05.jpg 9x9; set data.cache: off"):
            with_cached_images(data, mode, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*")), "no half-written cache left"


def test_data_loader_workers_share_the_one_memory_mapped_cache(tmp_path, write_images):
    import torch

    from kagglecv.nn.images import ImageDataset, build_augment

    data = competition(tmp_path, write_images)
    cached = with_cached_images(data, "disk", tmp_path / "cache")
    cache_file = next((tmp_path / "cache").glob("*.npy"))

    class Probe(ImageDataset):
        def __getitem__(self, row):
            image, _, _ = super().__getitem__(row)
            pixels = self.images.pixels
            return image, isinstance(pixels, np.memmap) and os.path.samefile(pixels.filename, cache_file), row

    transform = build_augment("none", 14, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=False)
    plain = ImageDataset(data.images, None, transform, seed=None)
    probe = Probe(cached.images, None, transform, seed=None)
    loader = torch.utils.data.DataLoader(probe, batch_size=4, num_workers=2,
                                         multiprocessing_context="fork")
    seen = {}
    for images, mapped, rows in loader:
        assert bool(mapped.all()), "each worker reads the one cache file, not a copy"
        for image, row in zip(images, rows.tolist()):
            seen[row] = image
    assert sorted(seen) == list(range(len(data)))
    for row, image in seen.items():
        torch.testing.assert_close(image, plain[row][0], rtol=0, atol=0)


def test_the_image_checks_run_once_per_set_of_files_and_again_for_a_changed_file(tmp_path, write_images, monkeypatch):
    data = competition(tmp_path, write_images)
    opened = []
    monkeypatch.setattr(cache, "check_images", lambda paths: (opened.append(len(paths)), check_images(paths)))
    marker = check_images_once(data, tmp_path / "cache")
    assert not (tmp_path / "cache").exists(), "nothing is written before the command passes its output checks"
    remember_checked([marker])
    assert check_images_once(data, tmp_path / "cache") is None
    assert opened == [12], "the second command finds the passed check and skips it"
    data.images[3].write_bytes(b"not an image any more")
    with pytest.raises(DataError, match="i03.jpg"):
        check_images_once(data, tmp_path / "cache")
    assert opened == [12, 12] and len(list((tmp_path / "cache").glob("checked-*"))) == 1, "a failed check marks nothing"
