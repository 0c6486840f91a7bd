"""``attnrec export``: a trained two-tower model as files another runtime serves.

The export is written in one space where a score is an inner product, whatever the scorer:
``score(user, item) = query · item_vector`` (:func:`retrieval_space`; a model's ``item_bias`` is
the last coordinate, against a 1 in the query). That is what an ANN index
(:mod:`attnrec.ann`), a vector database or a hand-written service needs, and it lets the item
vectors be exported once instead of re-running the item encoder. The folder holds:

* ``item_vectors.parquet``: ``item`` (raw id), ``title`` (when the catalogue has titles) and
  ``vector`` (float32, in the retrieval space), one row per item, in internal-id order;
* ``user_encoder.onnx``: ``history [B, L]`` (int64 internal item ids, oldest first, left
  padded with 0, ``L <= max_len``) -> ``query [B, D]`` and ``scores [B, N]`` (against the
  item vectors, column ``j`` = row ``j`` of the Parquet file), from ``torch.export`` with the
  batch and history length dynamic, converted by ``torch.onnx``;
* ``export.json``: sizes, the scorer, the model's class and the ONNX parity check's figure.

A raw item id maps to its internal id as its row number + 1 (row 0 of the model is padding).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interfaces import Scorer
from .model import Recommender
from .scorers import BilinearScorer, CosineScorer, DotScorer

ITEMS_FILE = "item_vectors.parquet"
ONNX_FILE = "user_encoder.onnx"
META_FILE = "export.json"


class ExportError(ValueError):
    """The model cannot be exported as a history-only two-tower model; says why."""


def _query_fn(scorer: Scorer) -> tuple[Any, Any]:
    """``(query(users), item_side(items))`` with ``scorer(u, v) == query(u) @ item_side(v).T``."""
    if type(scorer) is DotScorer:
        return (lambda u: u), (lambda v: v)
    if type(scorer) is CosineScorer:
        t = scorer.temperature
        return (lambda u: F.normalize(u, dim=-1) / t), (lambda v: F.normalize(v, dim=-1))
    if type(scorer) is BilinearScorer:
        return (lambda u: u @ scorer.weight), (lambda v: v)
    raise ExportError(
        f"{type(scorer).__name__} is not an inner product of a user and an item vector; exports and ANN indexes "
        "need DotScorer, CosineScorer or BilinearScorer"
    )


def check_exportable(model: Recommender) -> None:
    """Refuse models whose scores are not user vectors (from the history alone) against item
    vectors: target-aware ``scoring`` (DIN, BST) or user encoders that read other batch keys."""
    if type(model).scoring is not Recommender.scoring:
        raise ExportError(
            f"{type(model).__name__} scores items through its own scoring() (target-aware: the user vector depends "
            "on the item), so it has no item-independent user vector to export"
        )
    extra = [key for key in getattr(model.user_encoder, "required_keys", ()) if key != "history"]
    if extra:
        raise ExportError(
            f"{type(model.user_encoder).__name__} reads batch keys {extra} besides the history; the export takes "
            "the history only"
        )
    _query_fn(model.scorer)


def _sides(model: Recommender) -> tuple[Any, Any]:
    """The scorer's ``(query, item_side)`` with the model's ``item_bias`` (if any) as one more
    coordinate: a 1 on the query, the bias on the item, so the inner product is the score."""
    query_side, item_side = _query_fn(model.scorer)
    bias = model.item_bias
    if bias is None:
        return query_side, item_side
    return (
        lambda u: torch.cat([query_side(u), u.new_ones(*u.shape[:-1], 1)], dim=-1),
        lambda v: torch.cat([item_side(v), bias[1 : v.shape[0] + 1].to(v.dtype).unsqueeze(-1)], dim=-1),
    )


@torch.no_grad()
def retrieval_space(model: Recommender) -> Tensor:
    """The item vectors ``[N, D]`` (padding row dropped) in the model's inner-product space
    (``D + 1`` wide with an ``item_bias``)."""
    check_exportable(model)
    _, item_side = _sides(model)
    return item_side(model.item_encoder.all_items()[1:].detach()).float().clone()


@torch.no_grad()
def query_vectors(model: Recommender, batch: dict[str, Tensor]) -> Tensor:
    """A batch's users as queries of the inner-product space (for an ANN index)."""
    check_exportable(model)
    query_side, _ = _sides(model)
    return query_side(model.encode_users(batch).vectors)


class UserTower(nn.Module):
    """``history [B, L] -> (query [B, D], scores [B, N])``: the user encoder, the scorer's user
    side and the item table, as one module of plain tensors for ``torch.export``."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        check_exportable(model)
        self.item_encoder = model.item_encoder
        self.user_encoder = model.user_encoder
        self.scorer = model.scorer
        self.query_side, _ = _sides(model)
        self.register_buffer("items", retrieval_space(model))

    def forward(self, history: Tensor) -> tuple[Tensor, Tensor]:
        users = self.user_encoder({"history": history}, self.item_encoder).vectors
        query = self.query_side(users)
        return query, query @ self.items.T


def export_program(model: Recommender, max_len: int) -> torch.export.ExportedProgram:
    """``torch.export`` of the model's :class:`UserTower` with dynamic batch and length."""
    tower = UserTower(model).eval()
    example = torch.randint(1, model.catalog.num_items + 1, (2, min(3, max_len)))
    example[0, 0] = 0
    batch, length = torch.export.Dim("batch", min=1, max=65536), torch.export.Dim("length", min=1, max=max_len)
    return torch.export.export(tower, (example,), dynamic_shapes={"history": {0: batch, 1: length}})


def write_item_vectors(model: Recommender, path: str | os.PathLike[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = retrieval_space(model).numpy()
    catalog = model.catalog
    raw = list(catalog.raw_ids[1:]) if catalog.raw_ids else list(range(1, catalog.num_items + 1))
    columns: dict[str, Any] = {"item": pa.array(raw)}
    if catalog.titles:
        columns["title"] = pa.array([catalog.title(i) for i in range(1, catalog.num_items + 1)], type=pa.string())
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table(columns), path)


def read_item_vectors(path: str | os.PathLike[str]) -> tuple[list[Any], Tensor, list[str] | None]:
    """``(raw ids, vectors [N, D], titles or None)`` of an exported ``item_vectors.parquet``."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    column = table.column("vector").combine_chunks()
    vectors = np.asarray(column.flatten()).reshape(len(table), column.type.list_size)
    titles = table.column("title").to_pylist() if "title" in table.column_names else None
    return table.column("item").to_pylist(), torch.from_numpy(vectors.astype(np.float32)), titles


def onnx_parity(path: str | os.PathLike[str], model: Recommender, histories: Tensor) -> float:
    """The largest absolute difference between onnxruntime's and torch's query vectors and
    scores for ``histories``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: constant-folding notices are no news
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    query, scores = session.run(None, {session.get_inputs()[0].name: histories.numpy()})
    with torch.no_grad():
        expected = UserTower(model).eval()(histories)
    return max(
        float((torch.from_numpy(got) - want).abs().max()) for got, want in zip((query, scores), expected)
    )


def export_model(
    model: Recommender, out: str | os.PathLike[str], max_len: int | None = None, optimize: bool = True
) -> dict[str, Any]:
    """Write the export folder (see the module's docstring) and check the ONNX file against
    torch with onnxruntime on random histories; returns what ``export.json`` records.
    ``optimize=False`` skips onnxscript's graph optimisation (half the export time, a slower
    graph)."""
    model = model.eval().cpu()
    check_exportable(model)
    max_len = int(max_len or model.hparams.get("max_len") or getattr(model.user_encoder, "max_len", 0) or 50)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_item_vectors(model, out / ITEMS_FILE)
    program = export_program(model, max_len)
    torch.onnx.export(program, f=str(out / ONNX_FILE), dynamo=True, external_data=False, verbose=False, optimize=optimize)
    generator = torch.Generator().manual_seed(0)
    histories = torch.randint(1, model.catalog.num_items + 1, (8, max_len), generator=generator)
    histories[:4, : max_len // 2] = 0  # left padding, as batches carry it
    meta = {
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "scorer": type(model.scorer).__name__,
        "num_items": model.catalog.num_items,
        "dim": int(retrieval_space(model).shape[1]),
        "max_len": max_len,
        "inputs": {"history": "int64 [batch, length <= max_len], internal ids (row of item_vectors + 1), 0 = padding"},
        "outputs": {"query": "float32 [batch, dim]", "scores": "float32 [batch, num_items]"},
        "onnx_max_abs_diff": onnx_parity(out / ONNX_FILE, model, histories),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta

