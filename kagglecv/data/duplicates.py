"""Leakage checks on images: byte-identical files and perceptual near-duplicates under different ids.

Exact duplicates are found by sha256 of the file bytes. Near-duplicates use the 64-bit DCT perceptual hash of the
ImageHash library (``imagehash.phash``); pairs within a Hamming distance are found by multi-index hashing
(Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012): split each hash
into ``distance + 1`` blocks; two hashes within ``distance`` bits agree exactly on at least one block, so only
pairs that share a block are compared.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from kagglecv.core.errors import DataError, summarize
from kagglecv.data.decoding import image_bytes_digest, preview_image
from kagglecv.data.sources import ImageSource


def exact_duplicate_clusters(images: list[Path] | ImageSource) -> list[list[int]]:
    """Row indices of byte-identical images (files, or pixel rows), one list per set of two or more, in row order."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for row in range(len(images)):
        by_digest[image_bytes_digest(images, row)].append(row)
    return [rows for rows in by_digest.values() if len(rows) > 1]


def perceptual_hashes(images: list[Path] | ImageSource) -> np.ndarray:
    """The 64-bit pHash of each image as an unsigned integer; images open under the one policy of
    :func:`kagglecv.data.decoding.decode_image`, and every image that cannot be used is named in one error."""
    hashes = np.empty(len(images), dtype=np.uint64)
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    problems = []
    for row in range(len(images)):
        try:
            pixels = preview_image(images, row)
        except DataError as exc:
            problems.append(str(exc))
            continue
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        bits = imagehash.phash(picture).hash.reshape(-1).astype(np.uint64)
        hashes[row] = np.bitwise_or.reduce(bits * weights[::-1])
    if problems:
        raise DataError(f"{len(problems)} training images cannot be used: {summarize(problems, 5)}")
    return hashes


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)`` with ``i < j`` whose hashes differ in at most ``max_distance`` bits, sorted."""
    n_blocks = max_distance + 1
    bounds = np.linspace(0, 64, n_blocks + 1).astype(int)
    candidates: set[tuple[int, int]] = set()
    for low, high in zip(bounds[:-1], bounds[1:]):
        mask = np.uint64((1 << (high - low)) - 1)
        blocks = (hashes >> np.uint64(low)) & mask
        order = np.argsort(blocks, kind="stable")
        sorted_blocks = blocks[order]
        starts = np.flatnonzero(np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends):
            if end - start > 1:
                members = np.sort(order[start:end])
                for position, i in enumerate(members[:-1]):
                    candidates.update((int(i), int(j)) for j in members[position + 1 :])
    pairs = []
    for i, j in sorted(candidates):
        distance = int(bin(int(hashes[i] ^ hashes[j])).count("1"))
        if distance <= max_distance:
            pairs.append((i, j, distance))
    return pairs
