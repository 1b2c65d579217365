"""Identities by nearest neighbours: the ranking equals a dense cosine-similarity computation by hand, a query
that is a gallery row finds its own identity first with similarity 1, and bad embeddings are refused."""

import numpy as np
import pytest

from kagglecv.core.errors import KagglecvError
from kagglecv.second.neighbours import neighbour_top_k

RNG = np.random.default_rng(11)


def by_hand(gallery, labels, queries, k):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(queries) @ unit(gallery).T
    ranked = []
    for row in similarity:
        best = {}
        for label, value in zip(labels, row):
            best[label] = max(best.get(label, -np.inf), value)
        ranked.append(sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k])
    return ranked


@pytest.mark.parametrize("engine", ["sklearn", "faiss"])
def test_neighbour_ranking_equals_dense_cosine_similarity_by_hand(engine):
    """scikit-learn's brute force and faiss's exact inner-product index over unit vectors (the faiss extra) rank
    the same identities with the same cosines."""
    gallery = RNG.normal(size=(120, 16)).astype(np.float32)
    labels = np.array([f"w_{i % 37:02d}" for i in range(120)], dtype=object)
    queries = RNG.normal(size=(30, 16)).astype(np.float32)
    top = neighbour_top_k(gallery, labels, queries, range(30), k=5, neighbours=120, engine=engine)
    for row, expected in enumerate(by_hand(gallery, labels, queries, 5)):
        assert top.labels[row].tolist() == [label for label, _ in expected]
        np.testing.assert_allclose(top.scores[row], [value for _, value in expected], atol=1e-5)


def test_a_query_that_is_a_gallery_row_finds_its_identity_first():
    gallery = RNG.normal(size=(50, 8)).astype(np.float32)
    labels = np.array([f"w_{i % 20}" for i in range(50)], dtype=object)
    top = neighbour_top_k(gallery, labels, gallery[:10], range(10), k=3, neighbours=10)
    assert top.labels[:, 0].tolist() == labels[:10].tolist()
    np.testing.assert_allclose(top.scores[:, 0], 1.0, atol=1e-5)


def test_nan_embeddings_and_a_k_beyond_the_gallery_are_refused():
    gallery = RNG.normal(size=(10, 4)).astype(np.float32)
    labels = np.array(["a", "b"] * 5, dtype=object)
    with pytest.raises(KagglecvError, match="lower k"):
        neighbour_top_k(gallery, labels, gallery, range(10), k=3)
    broken = gallery.copy()
    broken[2, 1] = np.nan
    with pytest.raises(KagglecvError, match="1 rows hold NaN"):
        neighbour_top_k(gallery, labels, broken, range(10), k=2)
