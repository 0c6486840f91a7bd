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
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .evaluation import VectorScoring
from .interfaces import Batch, Loss
from .losses import catalog_chunk
from .model import Recommender
from .scorers import DotScorer

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

    The teacher's scores for the batch's examples are set before each training step by
    :class:`TeacherScores` (the loss interface passes the student's scores only): as
    :attr:`teacher_vectors` (user and catalogue vectors) when the teacher scores by dot
    products, else as :attr:`teacher_logits`. Masked candidates (padding, excluded items) count
    on neither side. With dot-product vectors on both sides, :meth:`catalog_loss` computes the
    loss without either model's ``[M, N]`` logits (:class:`_ChunkedCatalogDistillation`)."""

    candidates = "catalog"

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"DistillationLoss: alpha in [0, 1] and temperature > 0; got {alpha}, {temperature}")
        self.temperature, self.alpha = temperature, alpha
        self.teacher_logits: Tensor | None = None
        self.teacher_vectors: tuple[Tensor, Tensor] | None = None

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        teacher = self.teacher_logits
        if teacher is None and self.teacher_vectors is not None:
            users, items = self.teacher_vectors
            teacher = users @ items[: logits.shape[1]].T
        if teacher is None or teacher.shape != logits.shape:
            raise RuntimeError(
                "DistillationLoss needs the teacher's scores of the same examples: train with the TeacherScores "
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

    def catalog_loss(self, users: Tensor, items: Tensor, positive: Tensor, allowed: Tensor) -> Tensor:
        if self.teacher_vectors is None:
            return self.forward(users @ items.T, positive, allowed.expand(len(users), -1))
        teacher_users, teacher_items = self.teacher_vectors
        if teacher_users.shape[0] != users.shape[0] or teacher_items.shape[0] != items.shape[0]:
            raise RuntimeError(
                f"DistillationLoss: the teacher's vectors {tuple(teacher_users.shape)} x {tuple(teacher_items.shape)} "
                f"are not for these examples and items ({tuple(users.shape)} x {tuple(items.shape)})"
            )
        bias = torch.zeros(items.shape[0], device=items.device).masked_fill(~allowed, MASKED)
        return _ChunkedCatalogDistillation.apply(
            users.float(), items.float(), teacher_users.float(), teacher_items.float(), positive, bias,
            self.temperature, self.alpha, catalog_chunk(users, items),
        )  # fmt: skip


class _ChunkedCatalogDistillation(torch.autograd.Function):
    """:class:`DistillationLoss` of the student's ``users @ items.T`` against the teacher's
    ``teacher_users @ teacher_items.T`` (both plus ``bias``: 0, or :data:`MASKED` for a masked
    item), ``chunk`` rows at a time, forward and backward, as
    :class:`~attnrec.losses._ChunkedCatalogCrossEntropy` does for the plain softmax.

    Hand-written for speed: the logits path makes both models' ``[M, N]`` logits and about a
    dozen ``[M, N]`` passes (masking, three log-softmaxes, the KL and their gradients), which
    made a distillation step on Toys 7x a cross-entropy step. Per chunk, with
    ``z`` the student's logits and ``p`` the teacher's softmax at ``T``:
    ``loss = (1 - a) (lse(z) - z_pos) + a T^2 (sum p (t - z) / T - lse(t/T) + lse(z/T))`` and
    ``d loss / d z = (1 - a) (softmax(z) - onehot) + a T (softmax(z/T) - p)``; the backward
    recomputes both chunks' logits. float32, autocast off, first-order gradients only."""

    @staticmethod
    def forward(ctx: Any, users: Tensor, items: Tensor, teacher_users: Tensor, teacher_items: Tensor,
                positive: Tensor, bias: Tensor, temperature: float, alpha: float, chunk: int) -> Tensor:  # fmt: skip
        t = temperature
        lse, lse_t, lse_teacher = (users.new_empty(len(users)) for _ in range(3))
        loss = users.new_empty(len(users))
        with torch.autocast(users.device.type, enabled=False):
            for lo in range(0, len(users), chunk):
                part = slice(lo, lo + chunk)
                z = torch.addmm(bias, users[part], items.T)
                soft = z / t
                teacher = torch.addmm(bias, teacher_users[part], teacher_items.T).div_(t)
                lse[part], lse_t[part] = torch.logsumexp(z, dim=1), torch.logsumexp(soft, dim=1)
                lse_teacher[part] = torch.logsumexp(teacher, dim=1)
                p = (teacher - lse_teacher[part].unsqueeze(1)).exp_()
                cross = (p * (teacher - soft)).sum(dim=1)  # sum p (t - z) / T: a masked item has p = 0
                hard = lse[part] - z.gather(1, positive[part].unsqueeze(1)).squeeze(1)
                loss[part] = (1 - alpha) * hard + alpha * t * t * (cross - lse_teacher[part] + lse_t[part])
        ctx.save_for_backward(users, items, teacher_users, teacher_items, positive, bias, lse, lse_t, lse_teacher)
        ctx.temperature, ctx.alpha, ctx.chunk = temperature, alpha, chunk
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        users, items, teacher_users, teacher_items, positive, bias, lse, lse_t, lse_teacher = ctx.saved_tensors
        t, alpha, grad = ctx.temperature, ctx.alpha, grad.float()
        d_users, d_items = torch.empty_like(users), torch.zeros_like(items)
        with torch.autocast(users.device.type, enabled=False):
            for lo in range(0, len(users), ctx.chunk):
                part = slice(lo, lo + ctx.chunk)
                z = torch.addmm(bias, users[part], items.T)
                p = torch.addmm(bias, teacher_users[part], teacher_items.T).div_(t).sub_(lse_teacher[part].unsqueeze(1)).exp_()
                soft = (z / t).sub_(lse_t[part].unsqueeze(1)).exp_().sub_(p).mul_(alpha * t)
                dz = z.sub_(lse[part].unsqueeze(1)).exp_().mul_(1 - alpha).add_(soft)
                dz.scatter_add_(1, positive[part].unsqueeze(1), torch.full_like(lse[part], alpha - 1).unsqueeze(1))
                dz.mul_(grad[part].unsqueeze(1))
                torch.mm(dz, items, out=d_users[part])
                d_items.addmm_(dz.T, users[part])
        return d_users, d_items, None, None, None, None, None, None, None


class TeacherScores(L.Callback):
    """Before each training step, the teacher's catalogue scores for the examples the student
    trains on (``training_examples`` of the batch), handed to the student's
    :class:`DistillationLoss`: its user and catalogue vectors when it scores by dot products
    with the default scoring, else its logits. The teacher runs in eval mode without gradients."""

    def __init__(self, teacher: Recommender) -> None:
        self.teacher = teacher.eval()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch, batch_idx: int) -> None:
        assert isinstance(pl_module, Recommender) and isinstance(pl_module.loss, DistillationLoss)
        self.teacher.to(pl_module.device)
        examples = pl_module.training_examples(batch)
        loss = pl_module.loss
        with torch.no_grad():
            scoring = self.teacher.scoring(batch, examples)
            if isinstance(scoring, VectorScoring) and type(self.teacher.scorer) is DotScorer:
                loss.teacher_vectors, loss.teacher_logits = scoring.inner_product(), None
            else:
                loss.teacher_vectors, loss.teacher_logits = None, scoring.chunk(0, pl_module.catalog.num_items + 1)


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
