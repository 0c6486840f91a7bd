"""User-level differential privacy: the reported ε is Opacus' accountant's, a user moves a step's
gradient by at most the clipping norm however many windows they have, private training still
learns the planted structure, models that cannot be private are refused by layer, and the
membership-inference probe measures memorisation."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn

from attnrec import DifferentialPrivacy, Recommender
from attnrec.data import SyntheticDataModule
from attnrec.data.sequences import TrainWindows
from attnrec.encoders import PoolingUserEncoder, TransformerUserEncoder
from attnrec.evaluation import evaluate_popularity, membership_inference_auc, user_losses
from attnrec.interfaces import Batch, ItemEncoder, UserEncoder, UserEncoding
from attnrec.privacy import (
    PrivacyError,
    UserPoissonSampler,
    calibrate_noise,
    hold_out_users,
    per_user_gradients,
    release_popularity_prior,
    user_item_counts,
    vectorized_user_gradients,
    window_loader,
)

MAX_LEN = 20
ENCODER = functools.partial(TransformerUserEncoder, num_layers=1, max_len=MAX_LEN, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data(**kwargs: Any) -> SyntheticDataModule:
    kwargs = {"num_users": 120, "num_items": 160, "max_len": MAX_LEN, "batch_size": 40} | kwargs
    return SyntheticDataModule(**kwargs)


def trainer(callbacks: list, **kwargs: Any) -> L.Trainer:
    kwargs = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=1,
    ) | kwargs  # fmt: skip
    return L.Trainer(callbacks=callbacks, **kwargs)


def model(datamodule: SyntheticDataModule, **kwargs: Any) -> Recommender:
    kwargs = {"dim": 16, "user_encoder": ENCODER, "lr": 5e-3, "ks": (10,)} | kwargs
    return Recommender(datamodule.catalog, **kwargs)


def test_reported_epsilon_is_opacus_accountant_for_the_same_steps(capsys: pytest.CaptureFixture[str]) -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data()
    private = DifferentialPrivacy(epsilon=4.0, max_grad_norm=0.5)
    run = trainer([private], max_epochs=2)
    run.fit(model(datamodule), datamodule)
    # the noise was calibrated for this run; replaying its steps in a fresh accountant gives its ε
    users = datamodule.num_users
    assert private.sample_rate == pytest.approx(40 / users) and private.delta == pytest.approx(1 / users)
    assert private.steps == 2 * int(users / 40)
    accountant = RDPAccountant()
    for _ in range(private.steps):
        accountant.step(noise_multiplier=private.noise_multiplier, sample_rate=private.sample_rate)
    expected = accountant.get_epsilon(delta=1 / users)
    assert private.epsilon == pytest.approx(expected, rel=1e-9)
    assert 3.8 < private.epsilon <= 4.0  # spent up to (and not past) the target
    assert float(run.callback_metrics["privacy/epsilon"]) == pytest.approx(expected, rel=1e-6)
    # the state a checkpoint keeps resumes the count
    resumed = DifferentialPrivacy(epsilon=4.0)
    resumed.load_state_dict(private.state_dict())
    assert resumed.history == private.accountant.history
    # printed with the test metrics, in the protocol line
    run.test(run.lightning_module, datamodule, verbose=False)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"privacy=user-level DP-SGD (epsilon={expected:.3g} at delta={1 / users:.3g}" in printed


def test_the_popularity_prior_is_one_query_composed_in_the_same_accountant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data()
    private = DifferentialPrivacy(epsilon=8.0, max_grad_norm=0.5, prior_noise_multiplier=1.0)
    recommender = model(datamodule, item_bias=True, lr=0.0)  # lr 0: the weights stay as released
    run = trainer([private], max_epochs=2)
    run.fit(recommender, datamodule)
    users = datamodule.num_users
    assert private.steps == 2 * int(users / 40)
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=1.0, sample_rate=1.0)  # the count query: every user, once
    for _ in range(private.steps):
        accountant.step(noise_multiplier=private.noise_multiplier, sample_rate=private.sample_rate)
    expected = accountant.get_epsilon(delta=1 / users)
    assert private.epsilon == pytest.approx(expected, rel=1e-9)
    assert 7.9 < private.epsilon <= 8.0
    # the prior's share of the budget is paid for with noisier steps
    alone = calibrate_noise(8.0, 1 / users, private.sample_rate, private.steps, "rdp", [])
    assert private.noise_multiplier > alone * 1.01
    # the released prior is in the item bias and orders items like their training counts
    counts = user_item_counts(datamodule.split_data.train, datamodule.num_items)[1:]
    released = recommender.item_bias.detach()[1:].double()
    ranks = [v.argsort().argsort().double() for v in (released, counts)]
    assert torch.corrcoef(torch.stack(ranks))[0, 1] > 0.6  # measured 0.76-0.84 over five noise draws
    run.test(recommender, datamodule, verbose=False)
    assert "popularity prior by a Gaussian count query, noise multiplier 1" in " ".join(capsys.readouterr().out.split())
    # a resumed run counts the query once and keeps the released prior (no second release)
    run.save_checkpoint(tmp_path / "prior.ckpt")
    resumed = DifferentialPrivacy(epsilon=8.0, max_grad_norm=0.5, prior_noise_multiplier=1.0)
    again = model(datamodule, item_bias=True, lr=0.0)
    trainer([resumed], max_epochs=3).fit(again, datamodule, ckpt_path=tmp_path / "prior.ckpt")
    assert torch.equal(again.item_bias.detach()[1:].double(), released)
    assert resumed.steps == 3 * int(users / 40)
    assert sum(1 for s, q, n in resumed.accountant.history if s == 1.0 and q == 1.0) == 1


def test_a_prior_is_released_once_per_fit_and_a_resume_must_keep_its_setting(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data()
    private = DifferentialPrivacy(epsilon=8.0, prior_noise_multiplier=1.0)
    first = model(datamodule, item_bias=True, lr=0.0)
    run = trainer([private], max_epochs=1)
    run.fit(first, datamodule)
    run.save_checkpoint(tmp_path / "prior.ckpt")
    # the same callback on a fresh model: a second release, counted once in a fresh history
    second = model(datamodule, item_bias=True, lr=0.0)
    trainer([private], max_epochs=1).fit(second, datamodule)
    assert second.item_bias.abs().sum() > 0 and not torch.equal(second.item_bias, first.item_bias)
    assert private.steps == int(datamodule.num_users / 40)
    assert [entry for entry in private.accountant.history if entry[1] == 1.0] == [(1.0, 1.0, 1)]
    # a resume whose prior differs from the checkpoint's would calibrate and count ε wrongly
    for other in (None, 2.0):
        with pytest.raises(PrivacyError, match=f"trained with prior_noise_multiplier=1.0, this run has {other}"):
            trainer([DifferentialPrivacy(epsilon=8.0, prior_noise_multiplier=other)], max_epochs=2).fit(
                model(datamodule, item_bias=True), datamodule, ckpt_path=tmp_path / "prior.ckpt"
            )


def test_the_prv_accountant_composes_the_prior_too() -> None:
    from opacus.accountants import PRVAccountant

    sigma = calibrate_noise(8.0, 1e-3, 0.5, 20, "prv", [(5.0, 1.0, 1)])
    accountant = PRVAccountant()
    accountant.history = [(5.0, 1.0, 1), (sigma, 0.5, 20)]
    with np.errstate(divide="ignore"):
        assert 7.9 < accountant.get_epsilon(delta=1e-3) <= 8.0
    assert sigma > calibrate_noise(8.0, 1e-3, 0.5, 20, "prv", [])


def test_the_count_query_moves_by_one_whatever_the_history_and_the_prior_follows_the_counts() -> None:
    rng = np.random.default_rng(0)
    base = [rng.choice(np.arange(1, 51), size=n, replace=True) for n in rng.integers(1, 30, size=40)]
    counts = user_item_counts(base, 50)
    for extra in ([7], list(range(1, 51)) * 3, [3, 3, 3, 0, 0]):  # one item, everything thrice, repeats + padding
        moved = user_item_counts([*base, np.asarray(extra)], 50) - counts
        assert float(moved.norm()) == pytest.approx(1.0)
    torch.manual_seed(0)
    prior = release_popularity_prior(base, 50, noise_multiplier=1e-4)
    share = (counts[1:] + 1e-4) / (counts[1:] + 1e-4).sum()
    assert torch.allclose(prior[1:].double(), share.log(), atol=1e-3)
    assert torch.logsumexp(prior[1:], 0).item() == pytest.approx(0.0, abs=1e-5)  # a log-distribution


def test_a_private_checkpoint_reports_its_epsilon_when_tested_without_the_callback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``attnrec test --ckpt_path`` builds a trainer without DifferentialPrivacy: the checkpoint
    itself must carry the guarantee (it used to print a protocol with no privacy entry)."""
    L.seed_everything(0, verbose=False)
    datamodule = data()
    private = DifferentialPrivacy(epsilon=4.0, max_grad_norm=0.5)
    run = trainer([private], max_epochs=1)
    run.fit(model(datamodule), datamodule)
    run.save_checkpoint(tmp_path / "private.ckpt")
    capsys.readouterr()
    trainer([]).test(model(datamodule), datamodule, ckpt_path=tmp_path / "private.ckpt", verbose=False)
    assert f"privacy={private.describe()}" in " ".join(capsys.readouterr().out.split())
    loaded = Recommender.load_from_checkpoint(tmp_path / "private.ckpt", weights_only=True)
    trainer([]).test(loaded, datamodule, verbose=False)
    assert f"privacy={private.describe()}" in " ".join(capsys.readouterr().out.split())


def test_a_user_moves_the_gradient_by_at_most_the_clip_however_many_windows() -> None:
    """Sampling draws a user, never a window: a user with ten windows is in a batch once or not
    at all, and their clipped gradient — over all their positions — changes the step by at
    most ``max_grad_norm``, as much as a user with one window can."""
    L.seed_everything(0, verbose=False)
    sequences = [np.zeros(0, np.int64)] + [np.arange(1, 12) + u for u in range(1, 9)]
    sequences[1] = np.arange(1, 101)  # user 1: 99 targets in ten windows of MAX_LEN // 2
    windows = TrainWindows(sequences, MAX_LEN // 2, MAX_LEN // 2)
    per_user = np.bincount(windows.index[:, 0])
    assert per_user[1] == 10 and per_user[2] == 1
    sampler = UserPoissonSampler(windows, sample_rate=0.5, steps=400)
    batches = list(sampler)
    users = [windows.index[b, 0].tolist() for b in batches]
    assert all(len(set(u)) == len(u) for u in users)
    heavy, light = (sum(u.count(who) for u in users) / len(batches) for who in (1, 2))
    assert 0.4 < heavy < 0.6 and 0.4 < light < 0.6  # drawn like everyone, not ten times as often

    datamodule = data(num_users=40, num_items=200)
    datamodule.setup("fit")
    recommender = model(datamodule)
    collate = datamodule.collate_fn("train")
    every_user = [windows[int(next(i for i in range(len(windows)) if windows.index[i, 0] == u))] for u in range(1, 9)]
    all_of_heavy = [windows[i] for i in range(len(windows)) if windows.index[i, 0] == 1]
    clip = 1e-3  # far below every user's gradient norm, so clipping binds for all

    def step(examples: list[dict]) -> torch.Tensor:
        """The noiseless DP step's summed clipped gradient, flattened."""
        optimizer = DPOptimizer(
            torch.optim.SGD(recommender.parameters(), lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
            expected_batch_size=1, loss_reduction="sum",
        )  # fmt: skip
        params = optimizer.params
        batch = collate(examples)
        for p, g in zip(params, per_user_gradients(recommender, batch, params)):
            p.grad_sample = g
        optimizer.clip_and_accumulate()
        return torch.cat([p.summed_grad.flatten() for p in params])

    full = step(every_user)
    for removed in (0, 1):  # the heavy user, a light one
        moved = (full - step(every_user[:removed] + every_user[removed + 1 :])).norm()
        assert clip * 0.99 < moved <= clip * 1.001
    # what the user-level sampling prevents: ten windows as ten rows, each clipped on its own,
    # move it well past the clip (measured 2.8x; their directions partly cancel)
    assert (step(every_user[1:] + all_of_heavy) - step(every_user[1:])).norm() > 2 * clip


@pytest.mark.parametrize(
    ("loss", "data_args", "encoder"),
    [
        ("CrossEntropyLoss", {}, ENCODER),
        ("BCELoss", {"num_negatives": 3}, ENCODER),
        ("CrossEntropyLoss", {}, PoolingUserEncoder),  # one example per row: the last position
    ],
    ids=["transformer-ce", "transformer-bce-negatives", "pooling-ce"],
)
def test_vectorized_user_gradients_equal_the_loop_over_users(loss: str, data_args: dict, encoder: Any) -> None:
    """The vmap pass lays each row's examples out over every position; it must give exactly what
    training_loss on the row alone gives, graded target weights included."""
    L.seed_everything(0, verbose=False)
    datamodule = data(num_users=40, **data_args)
    datamodule.setup("fit")
    recommender = model(datamodule, loss=loss, user_encoder=encoder)
    batch = next(iter(datamodule.train_dataloader()))
    batch["target_weight"] = torch.rand(batch["target"].shape)
    params = list(recommender.parameters())
    for fast, slow in zip(vectorized_user_gradients(recommender, batch, params, chunk_size=7),
                          per_user_gradients(recommender, batch, params)):  # fmt: skip
        assert fast.shape == slow.shape
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    assert any(bool(g.abs().sum() > 0) for g in per_user_gradients(recommender, batch, params))


def test_vectorized_gradients_cut_each_chunk_to_its_longest_history_exactly() -> None:
    """A Poisson batch is as wide as its longest history; each chunk of rows is cut to its own
    longest (the left padding), which must change no gradient, and the short rows' chunks must
    really run narrower."""
    L.seed_everything(0, verbose=False)
    datamodule = data(num_users=40, batching="fixed")  # every row padded to max_len
    datamodule.setup("fit")
    recommender = model(datamodule)
    batch = next(iter(datamodule.train_dataloader()))
    lengths = (batch["history"] != 0).sum(1)
    assert batch["history"].shape[1] == MAX_LEN and int(lengths.min()) < MAX_LEN // 2
    batch["target_weight"] = torch.rand(batch["target"].shape) * (batch["target"] != 0)
    widths: list[int] = []
    recommender.user_encoder.register_forward_pre_hook(lambda module, args: widths.append(args[0]["history"].shape[-1]))
    params = list(recommender.parameters())
    fast = vectorized_user_gradients(recommender, batch, params, chunk_size=5)
    assert min(widths) <= int(lengths.sort().values[4]) < MAX_LEN  # the shortest chunk's width
    for fast_grad, slow in zip(fast, per_user_gradients(recommender, batch, params)):
        torch.testing.assert_close(fast_grad, slow, rtol=1e-4, atol=1e-6)


class GatheringPooling(UserEncoder):
    """Mean pooling over the history's non-padding items gathered with ``nonzero``: a
    data-dependent shape that ``vmap`` cannot batch."""

    def forward(self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False):
        history = batch["history"]
        rows, columns = (history != 0).nonzero(as_tuple=True)
        total = item_encoder(history).new_zeros(history.shape[0], self.dim)
        total = total.index_add(0, rows, item_encoder(history[rows, columns]))
        return UserEncoding(total / (history != 0).sum(1, keepdim=True).clamp(min=1), None)


def test_a_model_vmap_cannot_batch_trains_by_the_loop_with_a_warning() -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data(num_users=40)
    private = DifferentialPrivacy(epsilon=None, noise_multiplier=1.0)
    with pytest.warns(UserWarning, match="vmap cannot batch Recommender's training loss.*loop over users"):
        trainer([private], max_steps=2).fit(model(datamodule, user_encoder=GatheringPooling), datamodule)
    assert private.steps == 2 and not private.vectorized


def test_private_training_beats_popularity_at_epsilon_8() -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data(num_users=600, num_items=150, batch_size=300)
    popularity = evaluate_popularity(datamodule, "val")
    recommender = model(datamodule, dim=32, lr=0.02, schedule="constant")
    # the noise DifferentialPrivacy(epsilon=8.0) calibrates for this run (Opacus' search takes
    # ~10 s at this sampling rate); the accountant confirms the budget below
    private = DifferentialPrivacy(epsilon=None, noise_multiplier=1.0138)
    trainer([private], max_epochs=5).fit(recommender, datamodule)
    assert private.sample_rate == 0.5 and private.steps == 10
    assert 7.5 < private.epsilon <= 8.0
    results = trainer([], limit_val_batches=None).validate(recommender, datamodule, verbose=False)[0]
    # measured: NDCG@10 0.143 against popularity's 0.090 (HR@10 0.255 against 0.190)
    assert results["val/NDCG@10"] > 1.3 * popularity["NDCG@10"]


class NormalisedPooling(UserEncoder):
    """Mean pooling followed by a batch norm: what DP-SGD cannot make private."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False):
        return UserEncoding(self.norm(item_encoder(batch["history"]).mean(1)), None)


class CountingPooling(UserEncoder):
    """Mean pooling that counts the items it has seen in a buffer: state outside the gradient."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False):
        if self.training:
            self.seen += (batch["history"] != 0).sum()
        return UserEncoding(item_encoder(batch["history"]).mean(1), None)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (NormalisedPooling, "layer 'user_encoder.norm' (BatchNorm1d)"),
        (CountingPooling, "buffer 'user_encoder.seen' changed in a training forward"),
    ],
)
def test_a_model_that_cannot_be_private_is_refused_naming_the_layer(encoder: type, message: str) -> None:
    datamodule = data(num_users=40)
    with pytest.raises(PrivacyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trainer([DifferentialPrivacy(epsilon=8.0)], max_steps=1).fit(model(datamodule, user_encoder=encoder), datamodule)


def test_settings_that_would_break_the_accounting_are_refused() -> None:
    datamodule = data(num_users=40, num_negatives=4, negative_sampling="popularity")
    with pytest.raises(PrivacyError, match="negative_sampling='popularity'"):
        trainer([DifferentialPrivacy(epsilon=8.0)], max_steps=1).fit(model(datamodule), datamodule)
    shared = data(num_users=40, num_negatives=4, shared_negatives=True)
    with pytest.raises(PrivacyError, match="shared_negatives=false"):
        trainer([DifferentialPrivacy(epsilon=8.0)], max_steps=1).fit(model(shared), shared)
    with pytest.raises(PrivacyError, match="accumulate_grad_batches=2"):
        trainer([DifferentialPrivacy(epsilon=8.0)], max_steps=1, accumulate_grad_batches=2).fit(
            model(data(num_users=40)), data(num_users=40)
        )
    with pytest.raises(PrivacyError, match="either epsilon"):
        DifferentialPrivacy(epsilon=8.0, noise_multiplier=1.0)
    with pytest.raises(PrivacyError, match=r"item_bias=True \(--model.item_bias=true\)"):
        trainer([DifferentialPrivacy(epsilon=8.0, prior_noise_multiplier=5.0)], max_steps=1).fit(
            model(data(num_users=40)), data(num_users=40)
        )
    with pytest.raises(PrivacyError, match="use accountant='rdp' or 'prv'"):
        DifferentialPrivacy(epsilon=8.0, prior_noise_multiplier=5.0, accountant="gdp")
    with pytest.raises(PrivacyError, match="the popularity prior alone spends"):
        calibrate_noise(1.0, 1e-3, 0.1, 10, "rdp", [(0.5, 1.0, 1)])


def test_a_step_that_draws_no_user_still_adds_noise() -> None:
    L.seed_everything(0, verbose=False)
    datamodule = data(num_users=40)
    recommender = model(datamodule)
    before = torch.cat([p.detach().flatten().clone() for p in recommender.parameters()])
    private = DifferentialPrivacy(epsilon=None, noise_multiplier=1.0, sample_rate=1e-6)
    trainer([private], max_steps=2).fit(recommender, datamodule)
    assert private.steps == 2
    after = torch.cat([p.detach().flatten() for p in recommender.parameters()])
    assert not torch.equal(before, after)


def test_membership_inference_auc() -> None:
    assert membership_inference_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4])) == 1.0
    assert membership_inference_auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5
    assert membership_inference_auc(torch.tensor([5.0, 0.2]), torch.tensor([0.3, 0.4])) == 0.5

    class HeldOut(SyntheticDataModule):
        def build_split(self, *args: Any):  # type: ignore[no-untyped-def]
            split, self.held_out = hold_out_users(super().build_split(*args), 0.5, seed=0)
            return split

    L.seed_everything(0, verbose=False)
    datamodule = HeldOut(num_users=120, num_items=400, max_len=MAX_LEN, batch_size=20)
    datamodule.setup("fit")
    members = datamodule.split_data.train
    assert sum(len(s) > 0 for s in members) == sum(len(s) > 0 for s in datamodule.held_out) == 60

    def probe(recommender: Recommender) -> float:
        _, inside = user_losses(recommender, window_loader(datamodule, members))
        _, outside = user_losses(recommender, window_loader(datamodule, datamodule.held_out))
        return membership_inference_auc(inside, outside)

    recommender = model(datamodule, dim=64, lr=1e-2, schedule="constant")
    assert abs(probe(recommender) - 0.5) < 0.15  # untrained: it knows no one
    trainer([], max_epochs=40).fit(recommender, datamodule)
    assert probe(recommender) > 0.8  # 60 users, 400 items, 40 epochs: it memorises its users
