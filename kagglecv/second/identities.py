"""Identity predictions of a ``model.identity`` run, from its embeddings and head cosines (no torch here).

A fold's rows are ranked by two cosines, each mapped from [-1, 1] to [0, 1]: the nearest training embedding of each
identity (:func:`~kagglecv.second.neighbours.neighbour_top_k` over the fold's gallery) and the ArcFace head's cosine
to the identity's center, the latter only for identities of the gallery (the fold's training part). The two are
blended ``1 - logit_weight : logit_weight`` (:func:`~kagglecv.core.topk.blend_top_k`; an identity absent from one
list scores 0 there, the lowest a mapped cosine can be), as the Happywhale 1st place blended its kNN and ArcFace
scores. The test's ranks are the folds' blended the same way with equal weights.

The reserved label (``new_whale``) is tuned on OOF (:func:`~kagglecv.core.topk.tune_new_threshold`): a row whose
identity its fold's training part lacks counts as new there, as a test row of an unseen individual will.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kagglecv.core.config import IdentitiesConfig
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import map_at_k_lists
from kagglecv.core.records import IdentityRecord
from kagglecv.core.topk import (
    RESERVED_IDENTITY_NAMES,
    TopK,
    blend_top_k,
    finite_threshold,
    nested_new_label_lists,
    new_identity_truth,
    top_k_of_scores,
    tune_new_threshold,
)
from kagglecv.data.table import CompetitionData
from kagglecv.second.neighbours import neighbour_top_k


@dataclass
class FoldOutputs:
    """A fold model's embeddings of some rows and its head's cosines to every identity's center."""

    embeddings: np.ndarray  # rows x width
    cosines: np.ndarray     # rows x identities, in [-1, 1]


def reserved_label(settings: IdentitiesConfig, classes: list[str], counts: dict[str, int]) -> str | None:
    """The label of an unseen identity: ``new_label`` (which the training table must not hold: it would be an
    identity), else whichever of ``new_whale``/``new_individual`` the table holds (its rows then count as unseen)."""
    if settings.new_label is not None:
        if settings.new_label in counts:
            raise KagglecvError(
                f"predict.identities.new_label: {settings.new_label!r} is a training identity "
                f"({counts[settings.new_label]} rows); the reserved label names an identity never seen. Leave it "
                "unset to take new_whale or new_individual from the table (its rows then count as unseen)")
        return settings.new_label
    return next((name for name in RESERVED_IDENTITY_NAMES if name in classes), None)


def identity_labels(data: CompetitionData, settings: IdentitiesConfig) -> tuple[np.ndarray, str | None]:
    """Each row's identity and the reserved label (:func:`reserved_label`)."""
    labels = data.class_names()
    names, counts = np.unique(labels, return_counts=True)
    return labels, reserved_label(settings, data.classes, dict(zip(names, counts)))


def check_identities(labels: np.ndarray, new_label: str | None, top_k: int | None = None) -> None:
    """An identity column from which a head can learn (some identity has two rows or more), and as many
    identities as each row's top k asks for."""
    known = labels[labels != new_label] if new_label is not None else labels
    _, counts = np.unique(known, return_counts=True)
    if len(counts) and counts.max() < 2:
        raise KagglecvError(f"model.identity: each of the {len(counts)} identities has one row; nothing ties two "
                            "images of one identity together, so no embedding can learn to find it (train a "
                            "classifier instead, without model.identity)")
    if top_k is not None and top_k > len(counts):
        raise KagglecvError(f"predict.identities.top_k: {top_k} identities asked of a table of {len(counts)}; lower it")


def known_identity_rows(labels: np.ndarray, new_label: str | None, rows: np.ndarray) -> np.ndarray:
    """``rows`` less those of an unseen identity: what a fold trains on and its neighbours are searched among."""
    return rows if new_label is None else rows[labels[rows] != new_label]


def fold_top_k(gallery: np.ndarray, gallery_labels: np.ndarray, queries: FoldOutputs, query_ids,
               classes: list[str], settings: IdentitiesConfig) -> TopK:
    """Each query's ``top_k`` identities among the gallery's, by the blend of neighbour and center cosines."""
    known = np.unique(gallery_labels)
    if settings.top_k > len(known):
        raise KagglecvError(f"predict.identities.top_k: {settings.top_k} identities asked of a gallery of "
                            f"{len(known)}; lower it")
    near = neighbour_top_k(gallery, gallery_labels, queries.embeddings, query_ids, settings.top_k,
                           settings.neighbours, settings.engine)
    near.scores = (near.scores + 1.0) / 2.0
    outside = ~np.isin(np.asarray(classes, dtype=object), known)
    centers = np.where(outside, -np.inf, (np.asarray(queries.cosines, dtype=np.float64) + 1.0) / 2.0)
    center = top_k_of_scores(query_ids, centers, classes, settings.top_k)
    weight = settings.logit_weight
    return blend_top_k([near, center], np.array([1.0 - weight, weight]), settings.top_k)


def tuned_identities(oof: TopK, labels: np.ndarray, new_label: str | None, metric_k: int,
                     settings: IdentitiesConfig) -> IdentityRecord:
    """The new label's threshold, tuned on the OOF rows (``labels``: their identities, in ``oof``'s order)."""
    if settings.top_k < metric_k:
        raise KagglecvError(f"predict.identities.top_k: {settings.top_k} identities kept, fewer than the metric's "
                            f"{metric_k}; raise it")
    if new_label is None:
        return IdentityRecord(top_k=settings.top_k, metric_k=metric_k,
                              oof_never=map_at_k_lists(list(labels), oof.lists(), metric_k))
    truth = new_identity_truth(labels, oof.folds, new_label)
    threshold, tuned, never = tune_new_threshold(oof, list(truth), metric_k, new_label)
    if not settings.tune_new:
        return IdentityRecord(top_k=settings.top_k, metric_k=metric_k, new_label=new_label, oof_never=never,
                              oof_tuned=never, oof_nested=never, new_rows=int((truth == new_label).sum()))
    return IdentityRecord(top_k=settings.top_k, metric_k=metric_k, new_label=new_label,
                          threshold=finite_threshold(threshold, oof.scores), oof_never=never, oof_tuned=tuned,
                          oof_nested=map_at_k_lists(list(truth), nested_new_label_lists(oof, truth, new_label,
                                                                                        metric_k), metric_k),
                          new_rows=int((truth == new_label).sum()))
