"""Identities by nearest neighbours of embeddings (the Happywhale winners' retrieval): each query's identities
ranked by their nearest gallery row's cosine similarity, as a top-k prediction (:mod:`kagglecv.core.topk`).

scikit-learn's ``NearestNeighbors`` (brute force, cosine distance) finds the ``neighbours`` nearest gallery rows, or,
past a million gallery rows when the ``faiss`` extra is installed (or when asked), faiss's exact inner-product index
over the unit embeddings (the same cosines, faster at that size); an identity's score is its best similarity among
them, so a query that equals a gallery row ranks that row's identity first with score 1. Queries are searched a
chunk at a time, so the distance matrix held is chunk x gallery.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from kagglecv.core.errors import KagglecvError, require_extra
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.core.topk import TopK, ranked_top_k

QUERY_CHUNK = 1024  # 1,024 x a 50,000-row gallery: a 400 MB distance matrix at a time
FAISS_FROM_ROWS = 1_000_000  # engine auto: faiss (when installed) for galleries this large
skn = imported_on_first_use("sklearn.neighbors")
faiss = imported_on_first_use("faiss")


def neighbour_top_k(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_ids, k: int,
                    neighbours: int = 100, engine: str = "auto") -> TopK:
    """Each query's k best identities by cosine similarity to their nearest gallery row (among the ``neighbours``
    nearest); a row with fewer identities among its neighbours is padded with empty labels scored -inf.
    ``engine``: ``sklearn``, ``faiss`` or ``auto`` (faiss past a million gallery rows when it is installed)."""
    gallery, queries = _checked(gallery, "gallery"), _checked(queries, "queries")
    if gallery.shape[1] != queries.shape[1]:
        raise KagglecvError(f"embeddings of {queries.shape[1]} values against a gallery of {gallery.shape[1]}")
    if k > len(np.unique(gallery_labels)):
        raise KagglecvError(f"k = {k} identities asked of a gallery of {len(np.unique(gallery_labels))}; lower k")
    search = _search(gallery, min(neighbours, len(gallery)), engine)
    names = np.asarray(gallery_labels, dtype=object)
    labels, scores = [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        similarities, nearest = search(queries[start:start + QUERY_CHUNK])
        found = ranked_top_k(np.repeat(np.arange(len(nearest)), nearest.shape[1]), names[nearest].ravel(),
                             similarities.ravel(), len(nearest), k, "max")
        labels.append(found[0])
        scores.append(found[1])
    return TopK(np.asarray(query_ids, dtype=object), np.concatenate(labels), np.concatenate(scores))


def _search(gallery: np.ndarray, neighbours: int, engine: str):
    """A function of a chunk of queries giving (cosine similarities, gallery rows) of their nearest neighbours."""
    if engine not in ("auto", "sklearn", "faiss"):
        raise KagglecvError(f"predict.identities.engine: {engine!r}; expected auto, sklearn or faiss")
    if engine == "faiss" or engine == "auto" and len(gallery) >= FAISS_FROM_ROWS and \
            importlib.util.find_spec("faiss") is not None:
        require_extra("faiss", "faiss", "predict.identities.engine: faiss")
        index = faiss.IndexFlatIP(gallery.shape[1])
        index.add(_unit(gallery))
        return lambda chunk: index.search(_unit(chunk), neighbours)
    index = skn.NearestNeighbors(n_neighbors=neighbours, metric="cosine", algorithm="brute").fit(gallery)

    def search(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        distances, nearest = index.kneighbors(chunk)
        return 1.0 - distances, nearest
    return search


def _unit(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.ascontiguousarray(values / np.maximum(norms, 1e-12), dtype=np.float32)


def _checked(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or not len(values):
        raise KagglecvError(f"{what}: expected rows x values embeddings, got shape {values.shape}")
    bad = int((~np.isfinite(values).all(axis=1)).sum())
    if bad:
        raise KagglecvError(f"{what}: {bad} rows hold NaN or infinite values; embed the run again")
    return values
