"""Samplers that hand the dataset ``(row, epoch)``, split across ranks, with the order a function of (seed, epoch)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from kagglecv.nn.images import worker_init
from kagglecv.nn.runtime import available_cores


class EpochSampler(Sampler):
    """Rows for one epoch: shuffled (or class-balanced draws) from ``(seed, epoch)``, then this rank's share.

    Args:
        rows: the table rows this loader may yield.
        shuffle: random order each epoch; otherwise table order (evaluation).
        seed: base seed; the order of epoch ``e`` depends on ``(seed, e)`` only, so a resumed run repeats it.
        weights: sampling weight per row for class-balanced sampling (draws with replacement), or None.
        rank, world_size: this process's share under DDP. Training pads to an equal share per rank; evaluation
            (``shuffle=False``) gives each rank a disjoint slice and pads nothing, so every row is scored once.
    """

    def __init__(self, rows, *, shuffle: bool, seed: int = 0, weights=None, rank: int = 0, world_size: int = 1):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shuffle = shuffle
        self.seed = seed
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, samples: int) -> None:
        """Skip the first ``samples`` of this rank's order: a run resumed mid-epoch continues where it stopped."""
        self.start = samples

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return self.rows[self.rank :: self.world_size]
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.rows, size=len(self.rows), replace=True, p=self.weights)
        else:
            order = rng.permutation(self.rows)
        per_rank = -(-len(order) // self.world_size)
        order = np.resize(order, per_rank * self.world_size)
        return order[self.rank :: self.world_size]

    def epoch_rows(self) -> np.ndarray:
        """This epoch's rows for this rank, in order, from the start set by :meth:`set_start`."""
        return self._order()[self.start :]

    def __iter__(self):
        return iter([(int(row), self.epoch) for row in self.epoch_rows()])

    def __len__(self) -> int:
        if not self.shuffle:
            return len(self.rows[self.rank :: self.world_size])
        return max(0, -(-len(self.rows) // self.world_size) - self.start)


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-row weight 1 / (rows of its class): every class is drawn equally often (multiclass and binary)."""
    counts = np.bincount(targets)
    return 1.0 / counts[targets]


def collate_skipping_unreadable(samples: list) -> tuple:
    """Default collation of the readable samples, plus the count of unreadable ones (``None``) left out."""
    readable = [sample for sample in samples if sample is not None]
    skipped = len(samples) - len(readable)
    if not readable:
        return torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped
    return (*default_collate(readable), skipped)


def build_loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int | None, device: torch.device,
                 drop_last: bool = False, collate_fn=None) -> DataLoader:
    """A DataLoader that does not starve the model: a worker per available core (unless set), kept alive across
    epochs, OpenCV single-threaded inside them, pinned memory on CUDA."""
    workers = available_cores() if num_workers is None else num_workers
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=worker_init, pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None, collate_fn=collate_fn)
