"""Batch augmentation on tensors: the same seed gives the same augmented batch, a flip mirrors, a shift moves the
content by exactly its pixels over a reflected border, Cutout zeroes one square, alternating flips show each image
both ways in any two epochs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kagglecv.nn.batch_augment import (
    BatchAugment,
    _cutout,
    _translate,
    _warp,
    alternating_flips,
)


def batch(count=8, size=12):
    return torch.arange(count * 3 * size * size, dtype=torch.float32).reshape(count, 3, size, size) / 1000


def test_the_same_seed_epoch_and_step_give_the_same_batch_and_others_do_not():
    augment = BatchAugment(flip=True, translate=2, cutout=4, seed=7)
    images = batch()
    torch.testing.assert_close(augment(images, 3, 5), augment(images, 3, 5), rtol=0, atol=0)
    assert not torch.equal(augment(images, 3, 5), augment(images, 3, 6))
    assert not torch.equal(augment(images, 3, 5), BatchAugment(True, 2, 4, seed=8)(images, 3, 5))
    assert augment(images, 0, 0).shape == images.shape


def test_a_flip_mirrors_and_only_flips_and_shifts_move_content_by_their_pixels():
    images = batch()
    flipped = BatchAugment(flip=True, translate=0, cutout=0, seed=1)(images, 0, 0)
    for original, result in zip(images, flipped):
        assert torch.equal(result, original) or torch.equal(result, original.flip(-1))
    shifts = torch.tensor([[0, 0], [1, 0], [0, -2], [2, 2], [-1, 1], [0, 1], [-2, -2], [1, -1]])
    moved = _translate(images, shifts, 2)
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    for index, (dy, dx) in enumerate(shifts.tolist()):
        expected = padded[index, :, 2 + dy: 2 + dy + 12, 2 + dx: 2 + dx + 12]
        torch.testing.assert_close(moved[index], expected, rtol=0, atol=0)


def test_cutout_zeroes_one_square_per_image():
    images = torch.ones(16, 3, 20, 20)
    cut = _cutout(images, 6, torch.Generator().manual_seed(0))
    zeroed = (cut == 0).all(dim=1)  # every channel of a pixel together
    for mask in zeroed:
        rows, cols = np.nonzero(mask.numpy())
        assert 0 < len(rows) <= 36 and len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert (cut[(cut != 0)] == 1).all()


def test_none_with_no_cutout_is_no_batch_augmentation():
    assert BatchAugment.from_config("none", True, 2, 0, 0) is None
    assert BatchAugment.from_config("flip", False, 2, 0, 0) == BatchAugment(False, 0, 0, 0)
    assert BatchAugment.from_config("flip_translate", True, 3, 5, 0) == BatchAugment(True, 3, 5, 0)


def test_the_rotating_warp_turns_counter_clockwise_about_the_centre_and_shifts_by_whole_pixels():
    square = batch(2, 12)
    turned = _warp(square, torch.tensor([90.0, -90.0]), torch.zeros(2, 2, dtype=torch.long))
    torch.testing.assert_close(turned[0], square[0].rot90(1, (-2, -1)), rtol=0, atol=1e-5)
    torch.testing.assert_close(turned[1], square[1].rot90(-1, (-2, -1)), rtol=0, atol=1e-5)
    wide = torch.rand(1, 3, 8, 14, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_warp(wide, torch.tensor([180.0]), torch.zeros(1, 2, dtype=torch.long)),
                               wide.flip(-1).flip(-2), rtol=0, atol=1e-5)
    moved = _warp(wide, torch.tensor([0.0]), torch.tensor([[1, -2]]))  # one down, two left
    torch.testing.assert_close(moved[..., 1:, :-2], wide[..., :-1, 2:], rtol=0, atol=1e-5)


def test_a_rotation_setting_draws_angles_from_the_seed_and_keeps_the_batch_shape():
    augment = BatchAugment(flip=False, translate=2, cutout=0, seed=3, rotate=10.0)
    images = batch()
    torch.testing.assert_close(augment(images, 1, 2), augment(images, 1, 2), rtol=0, atol=0)
    assert augment(images, 1, 2).shape == images.shape and not torch.equal(augment(images, 1, 2), images)


def test_alternating_flips_show_each_image_both_ways_in_any_two_epochs_whatever_the_batch_order():
    rows = torch.arange(2000)
    augment = BatchAugment(flip=True, translate=0, cutout=0, seed=3, alternate_flip=True)
    flips = [alternating_flips(rows, epoch, seed=3) for epoch in range(4)]
    assert 0.45 < flips[0].float().mean() < 0.55, "a random half starts flipped"
    assert torch.equal(flips[0], ~flips[1]) and torch.equal(flips[1], ~flips[2]) and torch.equal(flips[0], flips[2])
    assert not torch.equal(flips[0], alternating_flips(rows, 0, seed=4)), "another seed, another half"
    images = batch(8)
    order = torch.tensor([5, 900, 17, 3, 1999, 42, 8, 600])
    shuffled = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    straight = augment(images, 1, 0, order)
    reordered = augment(images[shuffled], 1, 9, order[shuffled])  # another step, another order: the same flips
    torch.testing.assert_close(reordered, straight[shuffled], rtol=0, atol=0)
    for index, row in enumerate(order.tolist()):
        expected = images[index].flip(-1) if flips[1][row] else images[index]
        torch.testing.assert_close(straight[index], expected, rtol=0, atol=0)


def test_alternating_flip_comes_from_the_config_only_with_flips():
    assert BatchAugment.from_config("flip", True, 2, 0, 0, alternate_flip=True).alternate_flip
    assert not BatchAugment.from_config("flip", False, 2, 0, 0, alternate_flip=True).alternate_flip
    with pytest.raises(ValueError, match="rows"):
        BatchAugment(True, 0, 0, 0, alternate_flip=True)(batch(2), 0, 0)
