"""Identities by nearest neighbours of embeddings (the Happywhale winners' retrieval): each query's identities
ranked by their nearest gallery row's cosine similarity, as a top-k prediction (:mod:`kagglecv.core.topk`).

scikit-learn's ``NearestNeighbors`` (brute force, cosine distance) finds the ``neighbours`` nearest gallery rows;
an identity's score is its best similarity among them, so a query that equals a gallery row ranks that row's identity
first with score 1. Queries are searched a chunk at a time, so the distance matrix held is chunk x gallery.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from kagglecv.core.errors import KagglecvError
from kagglecv.core.topk import TopK, ranked_top_k

QUERY_CHUNK = 1024  # 1,024 x a 50,000-row gallery: a 400 MB distance matrix at a time


def neighbour_top_k(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_ids, k: int,
                    neighbours: int = 100) -> TopK:
    """Each query's k best identities by cosine similarity to their nearest gallery row (among the ``neighbours``
    nearest); a row with fewer identities among its neighbours is padded with empty labels scored -inf."""
    gallery, queries = _checked(gallery, "gallery"), _checked(queries, "queries")
    if gallery.shape[1] != queries.shape[1]:
        raise KagglecvError(f"embeddings of {queries.shape[1]} values against a gallery of {gallery.shape[1]}")
    if k > len(np.unique(gallery_labels)):
        raise KagglecvError(f"k = {k} identities asked of a gallery of {len(np.unique(gallery_labels))}; lower k")
    index = NearestNeighbors(n_neighbors=min(neighbours, len(gallery)), metric="cosine", algorithm="brute")
    index.fit(gallery)
    names = np.asarray(gallery_labels, dtype=object)
    labels, scores = [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        distances, nearest = index.kneighbors(queries[start:start + QUERY_CHUNK])
        found = ranked_top_k(np.repeat(np.arange(len(nearest)), nearest.shape[1]), names[nearest].ravel(),
                             (1.0 - distances).ravel(), len(nearest), k, "max")
        labels.append(found[0])
        scores.append(found[1])
    return TopK(np.asarray(query_ids, dtype=object), np.concatenate(labels), np.concatenate(scores))


def _checked(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or not len(values):
        raise KagglecvError(f"{what}: expected rows x values embeddings, got shape {values.shape}")
    bad = int((~np.isfinite(values).all(axis=1)).sum())
    if bad:
        raise KagglecvError(f"{what}: {bad} rows hold NaN or infinite values; embed the run again")
    return values
