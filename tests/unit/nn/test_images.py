"""Decoding any image a competition ships into RGB uint8, and the augmentation pipelines."""

import numpy as np
import pytest
from PIL import Image

from kagglecv.core.errors import DataError
from kagglecv.data.decoding import decode_image
from kagglecv.nn.images import ImageDataset, build_augment


def save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("ext", ["png", "jpg", "ppm", "bmp", "webp", "tiff"])
def test_common_formats_decode_to_rgb_uint8(tmp_path, ext):
    pixels = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    out = decode_image(save(tmp_path, f"x.{ext}", Image.fromarray(pixels)))
    assert out.shape == (9, 7, 3) and out.dtype == np.uint8
    if ext in ("png", "ppm", "bmp", "tiff"):
        np.testing.assert_array_equal(out, pixels)


def test_grayscale_palette_rgba_cmyk(tmp_path):
    gray = Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), mode="L")
    assert (decode_image(save(tmp_path, "g.png", gray)) == 77).all()
    palette = gray.convert("P")
    assert decode_image(save(tmp_path, "p.png", palette)).shape == (4, 4, 3)
    rgba = Image.new("RGBA", (4, 4), (200, 100, 50, 255))
    assert (decode_image(save(tmp_path, "a.png", rgba))[0, 0] == [200, 100, 50]).all()
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert (decode_image(save(tmp_path, "c.jpg", cmyk)) > 250).all(), "CMYK white stays white"


def test_16_bit_is_scaled_not_clipped(tmp_path):
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = decode_image(save(tmp_path, "d.png", Image.fromarray(pixels)))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 6, 3), dtype=np.uint8)
    pixels[:, 0] = 255  # a white left edge
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(save(tmp_path, "r.jpg", image, exif=exif.tobytes(), quality=100))
    assert out.shape == (6, 2, 3)
    assert out[0].mean() > 200, "the white left edge is on top after rotating clockwise"


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    path = save(tmp_path, "t.jpg", Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t\.jpg: cannot decode image"):
        decode_image(path)


@pytest.mark.parametrize("preset", ["none", "light", "medium", "heavy"])
@pytest.mark.parametrize("size", [32, 96])
def test_presets_give_normalized_tensors_of_the_size(tmp_path, preset, size):
    path = save(tmp_path, "x.png", Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)))
    dataset = ImageDataset([path], np.array([0]), build_augment(preset, size, (0.5,) * 3, (0.25,) * 3, train=True))
    image, target, row = dataset[(0, 0)]
    assert tuple(image.shape) == (3, size, size) and target == 0 and row == 0
    assert image.min() >= -2.0 - 1e-6 and image.max() <= 2.0 + 1e-6


def test_augmentation_depends_only_on_seed_epoch_and_row(tmp_path):
    path = save(tmp_path, "x.png", Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    pipeline = build_augment("heavy", 32, (0.5,) * 3, (0.5,) * 3, train=True)
    dataset = ImageDataset([path, path], np.array([0, 0]), pipeline, seed=3)
    first = dataset[(1, 5)][0]
    dataset[(0, 2)]  # other draws in between must not matter
    assert (dataset[(1, 5)][0] == first).all()
    assert not all((dataset[(1, epoch)][0] == first).all() for epoch in range(6, 9))


def test_explicit_albumentations_list(tmp_path):
    path = save(tmp_path, "x.png", Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)))
    spec = [{"__class_fullname__": "HorizontalFlip", "p": 1.0}]
    image = ImageDataset([path], None, build_augment(spec, 4, (0, 0, 0), (1, 1, 1), train=True))[0][0]
    expected = np.arange(48, dtype=np.float32).reshape(4, 4, 3)[:, ::-1] / 255
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    with pytest.raises(DataError, match="augment: cannot build the transform list"):
        build_augment([{"__class_fullname__": "NoSuchTransform"}], 4, (0, 0, 0), (1, 1, 1), train=True)


def test_presets_can_leave_flips_out():
    import albumentations as A

    for preset in ("light", "medium", "heavy"):
        with_flip = build_augment(preset, 32, (0.5,) * 3, (0.5,) * 3, train=True)
        without = build_augment(preset, 32, (0.5,) * 3, (0.5,) * 3, train=True, hflip=False)
        assert any(isinstance(t, A.HorizontalFlip) for t in with_flip.transforms)
        assert not any(isinstance(t, A.HorizontalFlip) for t in without.transforms)
