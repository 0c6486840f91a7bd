"""Approximate top-k retrieval over item vectors with faiss (the ``ann`` extra).

Exact ranking (:func:`attnrec.evaluation.rank_full`) stays what evaluation uses: an index
trades a little recall for speed when a catalogue is too large to score whole per request.
:class:`AnnIndex` is built in the inner-product space of :mod:`attnrec.export` (``score =
query · item vector`` for dot, cosine and bilinear scorers), over a model, an export folder or
any ``[N, D]`` array; ids are internal (row ``j`` is item ``j + 1``; 0 is padding).

Kinds: ``ivf`` (the default: inverted lists trained by k-means, ``nprobe`` of ``nlist`` lists
searched per query), ``hnsw`` (graph; no training; high recall on a catalogue of thousands, low
on a million clustered vectors in ``benchmarks/serving.py``) and ``flat`` (exact inner product,
the reference the others are measured against).

The IVF index searches inner products as Euclidean distances (Bachrach et al., RecSys 2014):
each item ``x`` gets one more coordinate ``sqrt(M² - |x|²)`` (``M`` the largest norm) and a
query a zero there, so ``|q - x|² = |q|² + M² - 2 q·x`` ranks exactly as ``q·x``. k-means and the
list assignment then work in a metric space: with item norms that vary (as trained tables'
do), lists clustered by inner product put the long vectors everywhere and a query must probe
many more lists for the same recall (measured on 100K clustered vectors, 1,264 lists: recall@10
0.91 at 16 probes against 0.69, 0.97 at 32 against 0.86). Scores returned are the exact inner
products of the items found.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch
from torch import Tensor

Kind = Literal["hnsw", "ivf", "flat"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("ANN retrieval needs faiss: pip install 'attnrec[ann]' (faiss-cpu)") from exc
    return faiss


class AnnIndex:
    """Top-k items by inner product with a faiss index.

    Args:
        vectors: item vectors ``[N, D]`` in the inner-product space (row j = item j + 1).
        kind: ``"ivf"`` (default), ``"hnsw"`` or ``"flat"`` (exact). IVF is the default because
            it was as good or better in every measured row (``benchmarks/serving.py``): recall@10
            0.975 at 46x the exact queries/s over 1M clustered vectors where HNSW (m=32) found at
            most 0.55, and 0.988 against HNSW's 0.982 at the same speed on Toys' item table.
        m: HNSW graph degree; ``ef_construction``/``ef_search``: HNSW's build and search beams.
        nlist: IVF lists (default ``4 * sqrt(N)``); ``nprobe``: lists searched per query.
    """

    def __init__(
        self,
        vectors: Tensor | np.ndarray,
        kind: Kind = "ivf",
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 64,
    ) -> None:
        faiss = _faiss()
        data = _float32(vectors)
        self.num_items, self.dim = data.shape
        self.kind = kind
        if kind == "flat":
            self.index = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, min(self.num_items // 39, int(4 * math.sqrt(self.num_items))))
            squared = np.einsum("ij,ij->i", data, data)
            data = np.hstack([data, np.sqrt(squared.max() - squared)[:, None]]).astype(np.float32)
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim + 1), self.dim + 1, nlist, faiss.METRIC_L2)
            self.index.train(data)
            self.index.nprobe = min(nprobe, nlist)
        else:
            raise ValueError(f"AnnIndex: kind={kind!r}; choose 'hnsw', 'ivf' or 'flat'")
        self.index.add(data)
        self.augmented = kind == "ivf"
        if self.augmented:
            self.index.make_direct_map()  # scores: the found items' inner products, recomputed exactly

    def set_search(self, ef_search: int | None = None, nprobe: int | None = None) -> AnnIndex:
        """Widen or narrow the search of a built index (HNSW's beam ``ef_search``, IVF's
        ``nprobe`` lists): recall against queries/s, without rebuilding."""
        if ef_search is not None and self.kind == "hnsw":
            self.index.hnsw.efSearch = ef_search
        if nprobe is not None and self.kind == "ivf":
            self.index.nprobe = min(nprobe, self.index.nlist)
        return self

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> AnnIndex:
        """An index over a (two-tower) model's items; queries are :meth:`query` of its users."""
        from .export import retrieval_space

        return cls(retrieval_space(model), **kwargs)

    @classmethod
    def from_export(cls, folder: str | os.PathLike[str], **kwargs: Any) -> AnnIndex:
        """An index over an ``attnrec export`` folder's ``item_vectors.parquet``."""
        from .export import ITEMS_FILE, read_item_vectors

        return cls(read_item_vectors(Path(folder) / ITEMS_FILE)[1], **kwargs)

    def search(
        self, queries: Tensor | np.ndarray, k: int, exclude: Iterable[Iterable[int]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Item ids ``[B, k]`` (internal, 1-based) and scores of the top-k for each query, leaving
        out the ids in ``exclude[i]`` for query ``i``. A list with fewer than ``k`` items found
        ends in item 0 with score ``-inf``, as ``Recommender.recommend`` does."""
        if k < 1:
            raise ValueError(f"AnnIndex.search: k must be at least 1, got {k}")
        data = _float32(queries)
        excluded = [set(int(i) for i in row) for row in exclude] if exclude is not None else [set()] * len(data)
        fetch = min(self.num_items, k + max((len(row) for row in excluded), default=0))
        if self.augmented:
            _, rows = self.index.search(np.hstack([data, np.zeros((len(data), 1), np.float32)]), fetch)
            found = self.index.reconstruct_batch(np.maximum(rows, 0).reshape(-1))[:, : self.dim]
            scores = np.einsum("bkd,bd->bk", found.reshape(*rows.shape, self.dim), data)
        else:
            scores, rows = self.index.search(data, fetch)
        ids = np.zeros((len(data), k), dtype=np.int64)
        out = np.full((len(data), k), -np.inf, dtype=np.float32)
        for i in range(len(data)):
            kept = [(row + 1, score) for row, score in zip(rows[i], scores[i]) if row >= 0 and row + 1 not in excluded[i]]
            for j, (item, score) in enumerate(kept[:k]):
                ids[i, j], out[i, j] = item, score
        return torch.from_numpy(ids), torch.from_numpy(out)

    def save(self, path: str | os.PathLike[str]) -> None:
        _faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnnIndex:
        faiss = _faiss()
        index = cls.__new__(cls)
        index.index = faiss.read_index(str(path))
        index.num_items, index.dim = index.index.ntotal, index.index.d
        index.kind = "hnsw" if "HNSW" in type(index.index).__name__ else "ivf" if "IVF" in type(index.index).__name__ else "flat"
        # attnrec builds IVF indexes searched by distance; one built by inner product still loads
        index.augmented = index.kind == "ivf" and index.index.metric_type == faiss.METRIC_L2
        if index.augmented:
            index.dim -= 1  # the coordinate that turns inner products into distances
            index.index.make_direct_map()
        return index


def recall_at_k(approximate: Tensor, exact: Tensor) -> float:
    """The share of the exact top-k ids that the approximate lists found (item 0 never counts)."""
    hits = sum(len(set(a.tolist()) & (set(e.tolist()) - {0})) for a, e in zip(approximate, exact))
    total = int((exact != 0).sum())
    return hits / max(1, total)


def _float32(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.float32)
