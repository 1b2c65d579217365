"""Augmentation of whole batches on the device (``augment.batch``): random horizontal flip, translate and Cutout as
tensor operations, for small images where per-image Python work in the loader costs more than the network.

The CIFAR-10 speed runs do exactly this (KellerJordan/cifar10-airbench: flip and a reflect-padded random crop of 2
px applied to the whole batch on the GPU); Cutout follows DeVries & Taylor (2017), a square of the image set to 0
(the mean colour, after normalization). The per-image albumentations pipeline still runs first (``augment.train``,
usually ``none`` with this), so the two compose. With ``augment.rotate`` the shift becomes one bilinear warp
that also rotates (for digits and signs, where the albumentations recipes rotate a few degrees). Each batch's randomness comes from a generator seeded by (seed,
epoch, step): the same seed gives the same augmented batch, and a resumed epoch repeats the batches it would have
made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BATCH_PRESETS = ("none", "flip", "flip_translate")


@dataclass(frozen=True)
class BatchAugment:
    flip: bool
    translate: int  # pixels: each image shifted by up to this much in x and y, reflect-padded
    cutout: int     # pixels: the side of a square set to 0 in each image; 0 is off
    seed: int
    rotate: float = 0.0  # degrees: each image also rotated by up to this much, in one warp with its shift
    alternate_flip: bool = False  # each image flipped on every other epoch (by its row), not by a coin each epoch

    @classmethod
    def from_config(cls, preset: str, hflip: bool, translate: int, cutout: int, seed: int,
                    rotate: float = 0.0, alternate_flip: bool = False) -> "BatchAugment | None":
        if preset == "none" and cutout == 0:
            return None
        moves, flip = preset == "flip_translate", hflip and preset != "none"
        return cls(flip, translate if moves else 0, cutout, seed, rotate if moves else 0.0, flip and alternate_flip)

    def __call__(self, images: torch.Tensor, epoch: int, step: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` (N, C, H, W) augmented, on their device; a new tensor. ``rows``: the images' rows in the
        training table, which the alternating flip needs."""
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, step)) & 0x7FFF_FFFF_FFFF_FFFF)
        count = len(images)
        if self.flip:
            flipped = torch.rand(count, generator=generator) < 0.5  # drawn either way: the shifts after it stay put
            if self.alternate_flip:
                flipped = alternating_flips(rows, epoch, self.seed)
            images = torch.where(flipped.to(images.device)[:, None, None, None], images.flip(-1), images)
        if self.translate or self.rotate:
            shifts = torch.randint(-self.translate, self.translate + 1, (count, 2), generator=generator)
            if self.rotate:
                degrees = (torch.rand(count, generator=generator) * 2 - 1) * self.rotate
                images = _warp(images, degrees, shifts)
            else:
                images = _translate(images, shifts, self.translate)
        if self.cutout:
            images = _cutout(images, self.cutout, generator)
        return images


def alternating_flips(rows: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """Which of ``rows`` are flipped in ``epoch``: a fixed pseudo-random half of the table on even epochs, the other
    half on odd ones, so every image is seen both ways in any two epochs in a row (Jordan 2024, "94 % on CIFAR-10 in
    3.29 seconds", section 3.6: alternating flip). The half is a bit of a multiplicative hash of the row (Knuth's
    2654435761) and the seed: no state, the same on resume and in every data-loading order."""
    if rows is None:
        raise ValueError("augment.alternate_flip needs the batch's table rows")
    bits = ((rows.to(torch.int64) * 2654435761 + seed * 40503) >> 16) & 1
    return (bits ^ (epoch % 2)).bool()


def _translate(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image shifted by its (dy, dx): a crop of the reflect-padded batch, gathered at once."""
    count, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    shifts = shifts.to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] + pad + shifts[:, :1]    # (N, H)
    cols = torch.arange(width, device=images.device)[None, :] + pad + shifts[:, 1:]     # (N, W)
    batch = torch.arange(count, device=images.device)[:, None, None]
    gathered = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]   # (N, H, W, C)
    return gathered.permute(0, 3, 1, 2).contiguous()


def _warp(images: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each image rotated counter-clockwise by its angle about its centre and shifted by its (dy, dx) pixels, in one
    bilinear resampling with the border pixels repeated (a digit's or a sign's background stays what it was)."""
    count, _, height, width = images.shape
    radians = torch.deg2rad(degrees.to(torch.float32))
    cos, sin = radians.cos(), radians.sin()
    theta = torch.zeros(count, 2, 3)
    # affine_grid maps each output position to the input position it samples: the inverse rotation and shift.
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin * height / width, sin * width / height, cos
    theta[:, 0, 2], theta[:, 1, 2] = -2 * shifts[:, 1] / width, -2 * shifts[:, 0] / height
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``size`` x ``size`` square (clipped at the border) set to 0 at a random centre of each image."""
    count, _, height, width = images.shape
    centres = torch.stack([torch.randint(0, height, (count,), generator=generator),
                           torch.randint(0, width, (count,), generator=generator)], dim=1).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :]
    cols = torch.arange(width, device=images.device)[None, :]
    top, left = centres[:, :1] - size // 2, centres[:, 1:] - size // 2
    inside_rows = (rows >= top) & (rows < top + size)
    inside_cols = (cols >= left) & (cols < left + size)
    mask = inside_rows[:, :, None] & inside_cols[:, None, :]
    return images.masked_fill(mask[:, None, :, :], 0.0)
