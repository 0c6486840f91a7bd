"""Compression: the int8 user encoder and fp16/int8 item tables are smaller, keep a trained
model's quality on planted structure (still far above popularity), and leave the original alone."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from attnrec import Recommender
from attnrec.compress import (
    DistillationLoss,
    dequantize_rows,
    distill,
    quantize_item_table,
    quantize_rows,
    quantize_user_encoder,
    stored_bytes,
)
from attnrec.data import SyntheticDataModule
from attnrec.encoders import TransformerUserEncoder
from attnrec.losses import CrossEntropyLoss
from attnrec.evaluation import evaluate_popularity


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> tuple[Recommender, SyntheticDataModule]:
    L.seed_everything(0, verbose=False)
    data = SyntheticDataModule(num_users=400, num_items=150, max_len=20, batch_size=64, eval_batch_size=256)
    model = Recommender(data.catalog, dim=32, max_len=20, lr=5e-3, metrics=("NDCG",), ks=(10,))
    _trainer(max_epochs=4, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=data)
    return model.eval(), data


def _ndcg(model: Recommender, data: SyntheticDataModule) -> float:
    return float(_trainer().test(model, datamodule=data, verbose=False)[0]["test/NDCG@10"])


def test_int8_encoder_and_item_tables_keep_quality_and_shrink(trained) -> None:
    model, data = trained
    teacher = _ndcg(model, data)
    popularity = evaluate_popularity(data, "test", metrics=["NDCG"], ks=[10])["NDCG@10"]
    assert teacher > 1.5 * popularity  # the model learned the planted structure
    before = {name: value.clone() for name, value in model.state_dict().items()}
    int8 = quantize_user_encoder(model)
    assert stored_bytes(int8.user_encoder) < 0.5 * stored_bytes(model.user_encoder)
    assert _ndcg(int8, data) > 0.9 * teacher
    table = model.item_encoder.embedding.weight
    for dtype, ratio in (("fp16", 0.5), ("int8", 0.3)):
        smaller, size = quantize_item_table(model, dtype)
        assert size <= ratio * table.numel() * 4
        assert _ndcg(smaller, data) > 0.95 * teacher
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in before.items())  # original untouched


def test_int8_rows_round_trip_within_half_a_step() -> None:
    table = torch.randn(50, 8) * torch.rand(50, 1) * 3
    table[0] = 0  # the padding row
    stored, scale = quantize_rows(table, "int8")
    assert stored.dtype == torch.int8 and scale is not None
    error = (dequantize_rows(stored, scale) - table).abs()
    assert bool((error <= scale.unsqueeze(1) / 2 + 1e-6).all())
    assert bool((dequantize_rows(stored, scale)[0] == 0).all())


def test_distillation_loss_is_cross_entropy_when_the_student_agrees_and_pulls_it_towards_the_teacher() -> None:
    torch.manual_seed(0)
    teacher, positive = torch.randn(6, 20), torch.randint(1, 20, (6,))
    mask = torch.ones(6, 20, dtype=torch.bool)
    mask[:, 0] = False  # padding
    loss = DistillationLoss(temperature=2.0, alpha=0.5)
    loss.teacher_logits = teacher
    agreeing = loss(teacher.clone(), positive, mask)
    assert torch.allclose(agreeing, 0.5 * CrossEntropyLoss()(teacher, positive, mask), atol=1e-5)
    student = torch.zeros(6, 20, requires_grad=True)
    pure = DistillationLoss(temperature=2.0, alpha=1.0)
    pure.teacher_logits = teacher
    value = pure(student, positive, mask).sum()
    value.backward()
    assert bool(torch.isfinite(student.grad).all()) and bool((student.grad[:, 0] == 0).all())
    moved = pure(student.detach() - 5.0 * student.grad, positive, mask).sum()
    assert moved < value  # a gradient step brings the student's distribution closer
    with pytest.raises(RuntimeError, match="TeacherScores"):
        DistillationLoss()(teacher, positive, mask)


def test_fused_distillation_equals_the_logits_form_in_value_and_gradient(monkeypatch) -> None:
    """The model's fused path (:meth:`DistillationLoss.catalog_loss` on both models' vectors, in
    chunks of 8 rows that split these 21 examples unevenly) against the loss on materialised
    logits, excluded items included."""
    import attnrec.compress

    monkeypatch.setattr(attnrec.compress, "catalog_chunk", lambda users, items: 8)
    generator = torch.Generator().manual_seed(4)
    users = torch.randn(21, 6, generator=generator).requires_grad_()
    items = torch.randn(40, 6, generator=generator).requires_grad_()
    teacher_users, teacher_items = torch.randn(21, 10, generator=generator), torch.randn(40, 10, generator=generator)
    positive = torch.randint(1, 40, (21,), generator=generator)
    allowed = torch.rand(40, generator=generator) > 0.3
    allowed[positive] = True
    allowed[0] = False
    weights = torch.rand(21, generator=generator)
    loss = DistillationLoss(temperature=2.0, alpha=0.3)

    loss.teacher_vectors = teacher_users, teacher_items
    fused = loss.catalog_loss(users, items, positive, allowed)
    (fused * weights).sum().backward()
    grads = users.grad.clone(), items.grad.clone()
    users.grad = items.grad = None
    loss.teacher_vectors, loss.teacher_logits = None, teacher_users @ teacher_items.T
    logits = users @ items.T
    plain = loss(logits, positive, allowed.expand_as(logits))
    (plain * weights).sum().backward()
    assert torch.allclose(fused, plain, atol=1e-5)
    assert torch.allclose(grads[0], users.grad, atol=1e-5) and torch.allclose(grads[1], items.grad, atol=1e-5)
    assert (grads[1][~allowed] == 0).all()  # an excluded item gets nothing from either side


def test_the_model_distils_through_the_fused_path_with_the_logits_paths_loss(trained, monkeypatch) -> None:
    """A student's training loss under TeacherScores: fused (a dot-product teacher hands over
    vectors) equals the logits path; a teacher without dot products hands over logits."""
    from attnrec.compress import TeacherScores
    from attnrec.scorers import CosineScorer

    teacher, data = trained
    batch = next(iter(data.train_dataloader()))
    student = Recommender(data.catalog, dim=8, max_len=20, loss=DistillationLoss).eval()  # no dropout
    assert student._fused_catalog_loss()
    TeacherScores(teacher).on_train_batch_start(None, student, batch, 0)
    assert student.loss.teacher_vectors is not None and student.loss.teacher_logits is None
    fused, _ = student.training_loss(batch)
    monkeypatch.setattr(Recommender, "_fused_catalog_loss", lambda self: False)
    plain, _ = student.training_loss(batch)
    assert torch.allclose(fused, plain, atol=1e-5)

    cosine = Recommender(data.catalog, dim=8, max_len=20, scorer=CosineScorer)
    TeacherScores(cosine).on_train_batch_start(None, student, batch, 0)
    assert student.loss.teacher_vectors is None and student.loss.teacher_logits is not None
    assert torch.isfinite(student.training_loss(batch)[0])


def test_a_loss_that_overrides_forward_below_catalog_loss_is_not_bypassed(trained) -> None:
    """The fused path calls ``catalog_loss`` only where the class that defines it also defines
    the ``forward`` in use: a subclass of CrossEntropyLoss with its own forward gets it."""

    class Doubled(CrossEntropyLoss):
        def forward(self, logits, positive, mask=None):
            return 2 * super().forward(logits, positive, mask)

    _, data = trained
    batch = next(iter(data.train_dataloader()))
    L.seed_everything(0, verbose=False)
    plain = Recommender(data.catalog, dim=8, max_len=20).eval()
    doubled = Recommender(data.catalog, dim=8, max_len=20, loss=Doubled).eval()
    doubled.load_state_dict(plain.state_dict())
    assert plain._fused_catalog_loss() and not doubled._fused_catalog_loss()
    assert torch.allclose(doubled.training_loss(batch)[0], 2 * plain.training_loss(batch)[0], atol=1e-5)


@pytest.mark.slow
def test_a_distilled_student_a_quarter_of_the_size_learns_from_the_teacher(trained) -> None:
    teacher, data = trained
    L.seed_everything(1, verbose=False)
    student = Recommender(data.catalog, dim=8, max_len=20, lr=5e-3, metrics=("NDCG",), ks=(10,),
                          user_encoder=functools.partial(TransformerUserEncoder, num_layers=1))  # fmt: skip
    assert stored_bytes(student) <= stored_bytes(teacher) / 4
    distill(teacher, student, data, max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    assert isinstance(student.loss, CrossEntropyLoss)  # served and saved as a plain model
    popularity = evaluate_popularity(data, "test", metrics=["NDCG"], ks=[10])["NDCG@10"]
    assert _ndcg(student.eval(), data) > popularity
