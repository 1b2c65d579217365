"""Identities by nearest neighbours of embeddings (the Happywhale winners' retrieval): each query's identities
ranked by their nearest gallery row's cosine similarity, as a top-k prediction (:mod:`kagglecv.core.topk`).

scikit-learn's ``NearestNeighbors`` (brute force, cosine distance) finds the ``neighbours`` nearest gallery rows;
an identity's score is its best similarity among them, so a query that equals a gallery row ranks that row's identity
first with score 1. Queries are searched a chunk at a time, so the distance matrix held is chunk x gallery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from kagglecv.core.errors import KagglecvError
from kagglecv.core.topk import TopK

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
    labels = np.full((len(queries), k), "", dtype=object)
    scores = np.full((len(queries), k), -np.inf)
    names = np.asarray(gallery_labels, dtype=object)
    for start in range(0, len(queries), QUERY_CHUNK):
        distances, nearest = index.kneighbors(queries[start:start + QUERY_CHUNK])
        _best_identities(1.0 - distances, names[nearest], k, labels[start:], scores[start:])
    return TopK(np.asarray(query_ids, dtype=object), labels, scores)


def _best_identities(similarity: np.ndarray, names: np.ndarray, k: int, labels: np.ndarray,
                     scores: np.ndarray) -> None:
    """Fill ``labels``/``scores`` (rows from the chunk's first) with each row's k identities of best similarity."""
    long = pd.DataFrame({"row": np.repeat(np.arange(len(names)), names.shape[1]), "label": names.ravel(),
                         "score": similarity.ravel()})
    best = long.groupby(["row", "label"], sort=False, as_index=False)["score"].max()
    best = best.sort_values(["row", "score", "label"], ascending=[True, False, True], kind="stable")
    kept = best.groupby("row", sort=False).head(k)
    place = kept.groupby("row", sort=False).cumcount().to_numpy()
    labels[kept["row"].to_numpy(), place] = kept["label"].to_numpy()
    scores[kept["row"].to_numpy(), place] = kept["score"].to_numpy()


def _checked(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or not len(values):
        raise KagglecvError(f"{what}: expected rows x values embeddings, got shape {values.shape}")
    bad = int((~np.isfinite(values).all(axis=1)).sum())
    if bad:
        raise KagglecvError(f"{what}: {bad} rows hold NaN or infinite values; embed the run again")
    return values
