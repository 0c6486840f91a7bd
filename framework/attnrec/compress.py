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
* :func:`distill`: a smaller student trained on a teacher's scores through the loss interface:
  :class:`DistillationLoss` (a :class:`~attnrec.interfaces.Loss` over the catalogue) mixes the
  next-item cross-entropy with the KL divergence from the teacher's softened scores, which the
  :class:`TeacherScores` callback computes for the same training examples before each step.
  The student stays a plain ``Recommender``: its checkpoint loads and serves without the
  teacher.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interfaces import Batch, Loss
from .model import Recommender

TableDtype = Literal["fp16", "int8"]
MASKED = -1e9  # the logit of a masked candidate in DistillationLoss


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


class DistillationLoss(Loss):
    """``(1 - alpha) * CE(student, next item) + alpha * T^2 * KL(teacher_T || student_T)`` per
    example, over the catalogue (Hinton et al.'s soft targets; ``T`` = ``temperature``).

    The teacher's logits for the batch's examples are set in :attr:`teacher_logits` by
    :class:`TeacherScores` before each training step (the loss interface passes the student's
    logits only); masked candidates (padding, excluded items) count on neither side."""

    candidates = "catalog"

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"DistillationLoss: alpha in [0, 1] and temperature > 0; got {alpha}, {temperature}")
        self.temperature, self.alpha = temperature, alpha
        self.teacher_logits: Tensor | None = None

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        teacher = self.teacher_logits
        if teacher is None or teacher.shape != logits.shape:
            raise RuntimeError(
                "DistillationLoss needs the teacher's logits of the same examples: train with the TeacherScores "
                f"callback (got {None if teacher is None else tuple(teacher.shape)} for {tuple(logits.shape)})"
            )
        student, teacher = logits.float(), teacher.float()
        if mask is not None:  # a finite fill: its probability is 0, and 0 * (a - b) stays 0 (no inf - inf)
            student, teacher = student.masked_fill(~mask, MASKED), teacher.masked_fill(~mask, MASKED)
        hard = F.cross_entropy(student, positive, reduction="none")
        t = self.temperature
        log_teacher = F.log_softmax(teacher / t, dim=-1)
        kl = (log_teacher.exp() * (log_teacher - F.log_softmax(student / t, dim=-1))).sum(dim=-1)
        return (1 - self.alpha) * hard + self.alpha * t * t * kl


class TeacherScores(L.Callback):
    """Before each training step, the teacher's catalogue logits for the examples the student
    trains on (``training_examples`` of the batch), handed to the student's
    :class:`DistillationLoss`. The teacher runs in eval mode without gradients."""

    def __init__(self, teacher: Recommender) -> None:
        self.teacher = teacher.eval()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch, batch_idx: int) -> None:
        assert isinstance(pl_module, Recommender) and isinstance(pl_module.loss, DistillationLoss)
        self.teacher.to(pl_module.device)
        examples = pl_module.training_examples(batch)
        with torch.no_grad():
            scoring = self.teacher.scoring(batch, examples)
            pl_module.loss.teacher_logits = scoring.chunk(0, pl_module.catalog.num_items + 1)


def distill(
    teacher: Recommender,
    student: Recommender,
    datamodule: L.LightningDataModule,
    temperature: float = 2.0,
    alpha: float = 0.5,
    **trainer_kwargs: object,
) -> Recommender:
    """Train ``student`` (a smaller ``Recommender`` over the same catalogue) on the teacher's
    scores with a ``lightning.Trainer(**trainer_kwargs)``; its own loss is put back afterwards,
    so it is saved, evaluated and served as a plain model."""
    if student.catalog.num_items != teacher.catalog.num_items:
        raise ValueError(
            f"distill: the student has {student.catalog.num_items} items, the teacher {teacher.catalog.num_items}"
        )
    own_loss = student.loss
    student.loss = DistillationLoss(temperature, alpha)
    callbacks = [*trainer_kwargs.pop("callbacks", []), TeacherScores(teacher)]  # type: ignore[misc]
    try:
        L.Trainer(callbacks=callbacks, **trainer_kwargs).fit(student, datamodule=datamodule)  # type: ignore[arg-type]
    finally:
        student.loss = own_loss
    return student
