"""Smaller models for serving: int8 dynamic quantisation of the user encoder and fp16/int8
item tables.

Each function returns a new model (the original is left alone) that scores through the same
``Recommender`` machinery, so ``trainer.test`` measures its quality under the usual protocol and
``recommend``/the service use it unchanged; :func:`stored_bytes` is its size on disk.

* :func:`quantize_user_encoder`: every ``nn.Linear`` of the user encoder as int8 weights with
  activations quantised per batch at run time (PyTorch's dynamic quantisation; CPU only). The
  attention projections and feed-forward layers are most of a transformer encoder's work.
* :func:`quantize_item_table`: the item embedding stored as fp16, or as int8 with one scale per
  row (symmetric); the model computes with the values the stored table holds, so its quality
  is what the smaller table gives.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from .model import Recommender

TableDtype = Literal["fp16", "int8"]


def quantize_user_encoder(model: Recommender) -> Recommender:
    """A copy of ``model`` whose user encoder's linear layers are int8 (dynamic quantisation)."""
    compressed = copy.deepcopy(model).eval().cpu()
    with warnings.catch_warnings():  # torch.ao's deprecation notice in favour of torchao
        warnings.simplefilter("ignore")
        compressed.user_encoder = torch.ao.quantization.quantize_dynamic(
            compressed.user_encoder, {nn.Linear}, dtype=torch.qint8
        )
    return compressed


def quantize_rows(table: Tensor, dtype: TableDtype) -> tuple[Tensor, Tensor | None]:
    """``(stored, scale)``: the table as fp16 (no scale), or as int8 with a per-row scale
    ``max |row| / 127`` (an all-zero row, such as padding, gets scale 1)."""
    table = table.detach().float()
    if dtype == "fp16":
        return table.half(), None
    if dtype != "int8":
        raise ValueError(f"quantize_rows: dtype={dtype!r}; choose 'fp16' or 'int8'")
    scale = table.abs().amax(dim=1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(table / scale).clamp(-127, 127).to(torch.int8), scale.squeeze(1)


def dequantize_rows(stored: Tensor, scale: Tensor | None) -> Tensor:
    return stored.float() if scale is None else stored.float() * scale.unsqueeze(1)


def quantize_item_table(model: Recommender, dtype: TableDtype) -> tuple[Recommender, int]:
    """A copy of ``model`` computing with its item embedding as stored in ``dtype``, and that
    storage's size in bytes. Needs an item encoder with one ``embedding`` table (ids only)."""
    embedding = getattr(model.item_encoder, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(
            f"{type(model.item_encoder).__name__} has no single item embedding table to quantise (IdItemEncoder has)"
        )
    stored, scale = quantize_rows(embedding.weight, dtype)
    compressed = copy.deepcopy(model).eval().cpu()
    with torch.no_grad():
        compressed.item_encoder.embedding.weight.copy_(dequantize_rows(stored, scale))
    size = stored.numel() * stored.element_size() + (0 if scale is None else scale.numel() * 4)
    return compressed, size


def stored_bytes(module: nn.Module) -> int:
    """The size of a module's ``state_dict`` saved with ``torch.save`` (quantised layers keep
    their packed int8 weights)."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes
