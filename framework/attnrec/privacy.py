"""Differentially private training with the **user** as the privacy unit (DP-SGD through Opacus).

Each step draws users by Poisson sampling (Opacus' ``UniformWithReplacementSampler``: every
user independently with probability ``q``) and one of each drawn user's training windows, so a
user is in a step's batch once or not at all, however many windows and positions their history
holds. Each user's gradient is the gradient of their own mean loss
(:meth:`~attnrec.model.Recommender.training_loss` on their row alone); Opacus' ``DPOptimizer``
clips it to ``max_grad_norm``, sums, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` and averages over the expected batch size, and Opacus'
accountant turns ``(noise_multiplier, q, steps)`` into the ε spent at δ. The guarantee is
therefore user-level (ε, δ)-DP for the model's weights — not the weaker per-window guarantee
that sampling windows would give a user with many of them.

Why not Opacus' ``GradSampleModule``: its per-sample gradients come from hooks on module
forwards, which do not see a weight used functionally — the item table doubles as the output
layer when the catalogue is scored (``VectorScoring``), and its gradient from there would be
silently missing — nor a lookup shared by the batch's rows (the transformer's position
embeddings). Autograd on each user's own row is exact for any :class:`~attnrec.Recommender`, at
the cost of a backward pass per drawn user — vectorised over the users with ``torch.func.vmap``
where the model allows it, a loop otherwise; Lightning's own batch backward is discarded.

A **popularity prior** (``prior_noise_multiplier``) is released once before training by the
Gaussian mechanism on a count query: each user adds ``1 / sqrt(n_u)`` to each of their ``n_u``
distinct training items (a vector of L2 norm 1, so one user moves the counts by at most 1),
and Gaussian noise of standard deviation ``prior_noise_multiplier`` is added to every count.
The log of the released shares initialises the model's ``item_bias``; DP-SGD then trains the
whole model, the bias included, from there. The query is composed with the DP-SGD steps in the same Opacus
accountant (one more entry: sample rate 1, one step), and the DP-SGD noise is calibrated so
that both together spend the target ε. It pays where users are few and popularity is strong
(ML-100K: popularity is most of what DP-SGD learns from 943 users, and one query learns it
for little ε); where popularity is weak (Amazon Toys) the model stays at the prior's level and
loses its small lead over popularity (``benchmarks/privacy.py``).

Opacus is imported only when private training starts, so ``import attnrec`` stays light.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

if TYPE_CHECKING:
    from .data.datamodule import SequenceDataModule
    from .data.interactions import Split
    from .data.sequences import TrainWindows
    from .model import Recommender

Accountant = Literal["rdp", "prv", "gdp"]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class PrivacyError(ValueError):
    """A model, data module or trainer setting that differentially private training cannot honour."""


class UserPoissonSampler(Sampler[list[int]]):
    """Training batches of window indices: users drawn by Opacus' Poisson sampler (each
    independently with probability ``sample_rate``; a batch may be empty), one uniformly chosen
    window per drawn user. ``steps`` defaults to ``1 / sample_rate`` (one expected pass over
    the users). Randomness comes from torch's global generator, which ``seed_everything`` sets."""

    def __init__(self, windows: TrainWindows, sample_rate: float, steps: int | None = None) -> None:
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        users = windows.index[:, 0]
        order = np.argsort(users, kind="stable")
        self.users, starts, self.counts = np.unique(users[order], return_index=True, return_counts=True)
        self.windows_by_user = np.split(order, starts[1:])
        self.sample_rate = sample_rate
        self.users_sampler = UniformWithReplacementSampler(
            num_samples=len(self.users), sample_rate=sample_rate, steps=steps
        )

    @property
    def num_users(self) -> int:
        """Users with at least one training window: the population that is sampled."""
        return len(self.users)

    def __len__(self) -> int:
        return len(self.users_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for drawn in self.users_sampler:
            picks = torch.randint(0, 2**62, (len(drawn),)).tolist()
            yield [int(self.windows_by_user[u][p % self.counts[u]]) for u, p in zip(drawn, picks)]


def per_user_gradients(model: Recommender, batch: dict[str, Tensor], params: list[nn.Parameter]) -> list[Tensor]:
    """``[B, *p.shape]`` for each parameter: the gradient of each row's own training loss (rows
    are users under :class:`UserPoissonSampler`), by autograd on each row alone — exact for any
    model, one backward pass per row. Batch tensors whose first dimension is the batch's are
    sliced per row, others passed whole. A row without examples has zero gradient.
    :func:`vectorized_user_gradients` computes the same in one vectorised pass when it can."""
    rows = int(batch["user"].shape[0])
    grads = [p.new_zeros((rows, *p.shape)) for p in params]
    for i in range(rows):
        one = {k: v[i : i + 1] if v.dim() and v.shape[0] == rows else v for k, v in batch.items()}
        loss, examples = model.training_loss(one)
        if len(examples.rows) == 0:
            continue
        for out, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                out[i] = g
    return grads


class _RowLoss(nn.Module):
    """One row's training loss as a module call, for ``torch.func.functional_call``: the same
    reduction as :meth:`~attnrec.model.Recommender.training_loss` (weighted mean over the row's
    examples plus :meth:`~attnrec.model.Recommender.regularization`), with the row's examples laid
    out over every position and the missing ones weighted out, so every row has one shape."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, row: dict[str, Tensor], positions: Tensor, positive: Tensor, negatives: Tensor | None,
                weight: Tensor) -> Tensor:  # fmt: skip
        from .model import Examples

        one = {k: v.unsqueeze(0) for k, v in row.items()}
        examples = Examples(torch.zeros_like(positions), positions, positive, negatives)
        per_example = self.model.loss(*self.model.candidate_logits(one, examples))
        valid = weight > 0
        total = torch.where(valid, per_example * weight, torch.zeros_like(per_example)).sum()
        loss = total / weight.sum().clamp(min=1e-12) + self.model.regularization(one, examples)
        return torch.where(valid.any(), loss, torch.zeros_like(loss))  # a row without examples: no gradient


def vectorized_user_gradients(
    model: Recommender, batch: dict[str, Tensor], params: list[nn.Parameter], chunk_size: int = 64
) -> list[Tensor]:
    """:func:`per_user_gradients` by ``torch.func.vmap(grad(...))`` over chunks of
    ``chunk_size`` rows. Rows are chunked in order of history length and each chunk is cut to
    its own longest history (the columns cut are left padding in every per-position tensor), so
    a short-history user costs their real positions, not the width of the batch's longest
    history: Poisson batches are wide, as one long history in a thousand users sets the width.
    Exact because a model's scores do not depend on left padding (the length-aware batching
    contract). Raises whatever ``vmap`` cannot batch (a data-dependent shape in a model's
    scoring, say); :class:`DifferentialPrivacy` then falls back to the loop."""
    rows, width = batch["history"].shape
    if rows == 0:  # a Poisson draw of no user
        return per_user_gradients(model, batch, params)
    per_row = {k: v for k, v in batch.items() if v.dim() and v.shape[0] == rows}
    shared = {k: v for k, v in batch.items() if k not in per_row}
    if shared:
        raise ValueError(f"batch keys {sorted(shared)} are not per row; vectorised per-user gradients need every key per row")
    aligned = [k for k, v in per_row.items() if v.dim() >= 2 and v.shape[1] == width]
    filled = torch.zeros(rows, width, dtype=torch.bool, device=batch["history"].device)
    for key in aligned:
        filled |= (per_row[key] != 0).reshape(rows, width, -1).any(-1)
    lengths = width - filled.int().argmax(dim=1).masked_fill(~filled.any(1), width)
    grads = [p.new_zeros((rows, *p.shape)) for p in params]
    for chunk in lengths.argsort(descending=True, stable=True).split(chunk_size):
        cut = width - max(1, int(lengths[chunk].max()))
        part = {k: v[chunk][:, cut:] if k in aligned else v[chunk] for k, v in per_row.items()}
        for out, g in zip(grads, _vmap_user_gradients(model, part, params)):
            out[chunk] = g
    return grads


def _vmap_user_gradients(model: Recommender, batch: dict[str, Tensor], params: list[nn.Parameter]) -> list[Tensor]:
    """Per-row gradients in one ``vmap`` pass: the batch's examples
    (:meth:`~attnrec.model.Recommender.training_examples`, on the whole batch) are laid out per
    row over every position."""
    from torch.func import functional_call, grad, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows, width = batch["history"].shape
    examples = model.training_examples(batch)
    weights = model.example_weights(batch, examples)
    positions = torch.arange(width, device=batch["history"].device).expand(rows, width)
    positive = torch.ones_like(positions)  # an item id every loss can score; weighted out
    positive[examples.rows, examples.positions] = examples.positive
    weight = torch.zeros(rows, width, device=positions.device)
    weight[examples.rows, examples.positions] = 1.0 if weights is None else weights.to(weight.dtype)
    negatives = None
    if examples.negatives is not None:
        negatives = torch.ones(rows, width, examples.negatives.shape[1], dtype=torch.long, device=positions.device)
        negatives[examples.rows, examples.positions] = examples.negatives
    names = [name for name, p in model.named_parameters() if any(p is q for q in params)]
    frozen = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    wrapper = _RowLoss(model)

    def loss(values: tuple[Tensor, ...], row: dict[str, Tensor], *per: Tensor | None) -> Tensor:
        state = frozen | {f"model.{name}": value for name, value in zip(names, values)}
        return functional_call(wrapper, state, (row, *per))

    by_name = dict(model.named_parameters())
    values = tuple(by_name[name] for name in names)
    in_dims = (None, 0, 0, 0, None if negatives is None else 0, 0)
    # CPU's fused SDPA kernels have no vmap rule and would run row by row; the math kernel is
    # made of batched ops (same values; measured 1.2-1.3x faster per step on a CPU)
    kernel = sdpa_kernel(SDPBackend.MATH) if positions.device.type == "cpu" else contextlib.nullcontext()
    with warnings.catch_warnings(), kernel:  # torch's notes on ops without a vmap rule
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        grads = vmap(grad(loss), in_dims=in_dims, randomness="different")(
            tuple(v.detach() for v in values), batch, positions, positive, negatives, weight
        )
    found = {name: g for name, g in zip(names, grads)}
    return [found[name] for name in (next(n for n in names if by_name[n] is p) for p in params)]


def check_private(model: nn.Module) -> None:
    """Raise :class:`PrivacyError` naming the first layer that DP-SGD on per-user gradients cannot
    make private: batch normalisation (each user normalised with the others' statistics, and
    running statistics of the data kept outside the gradient) and components that read the
    training interaction graph (``catalog.train_edges``: one user's gradient then depends on
    every other user's interactions)."""
    for name, module in model.named_modules():
        if isinstance(module, BATCH_NORMS):
            raise PrivacyError(
                f"DifferentialPrivacy: layer '{name}' ({type(module).__name__}) normalises each user with the "
                "statistics of the others in the batch and keeps running statistics of the training data outside "
                "the gradient, so DP-SGD cannot make it private; replace it with nn.LayerNorm or nn.GroupNorm"
            )
        if "train_edges" in getattr(module, "required_features", ()):
            raise PrivacyError(
                f"DifferentialPrivacy: layer '{name}' ({type(module).__name__}) reads the training interaction graph "
                "(catalog.train_edges), so one user's gradient depends on every other user's interactions and "
                "clipping it bounds nothing; train a sequence or pooling model (e.g. TransformerUserEncoder + "
                "IdItemEncoder) privately instead"
            )


def changed_buffers(model: nn.Module, before: dict[str, Tensor]) -> str | None:
    """The first buffer (``layer.buffer``) whose value differs from ``before``: state learned
    from the data outside the gradient, which noise on the gradient does not protect."""
    for name, buffer in model.named_buffers():
        old = before.get(name)
        if old is not None and (old.shape != buffer.shape or not torch.equal(old, buffer)):
            return name
    return None


def user_item_counts(sequences: list[np.ndarray], num_items: int) -> Tensor:
    """``[num_items + 1]`` float64: each user's distinct items (0 is padding) weighted by
    ``1 / sqrt(n_u)``, summed over users — a count query of L2 sensitivity 1 per user."""
    items = [np.unique(seq[seq > 0]) for seq in sequences]
    weights = [np.full(len(u), 1.0 / math.sqrt(len(u))) for u in items if len(u)]
    if not weights:
        return torch.zeros(num_items + 1, dtype=torch.float64)
    counts = np.bincount(np.concatenate(items), weights=np.concatenate(weights), minlength=num_items + 1)
    return torch.from_numpy(counts[: num_items + 1])


def release_popularity_prior(
    sequences: list[np.ndarray], num_items: int, noise_multiplier: float, secure_mode: bool = False
) -> Tensor:
    """The log of each item's share of :func:`user_item_counts` plus Gaussian noise of standard
    deviation ``noise_multiplier`` (Opacus' noise generator; ``secure_mode`` as in DP-SGD),
    ``[num_items + 1]``. A released count is floored at 0 and given a pseudo-count of one noise
    standard deviation, so an item's prior never rests on noise alone; post-processing of the
    released counts, so it costs no privacy."""
    from opacus.optimizers.optimizer import _generate_noise  # what DPOptimizer draws its noise with

    counts = user_item_counts(sequences, num_items).float()
    noisy = counts + _generate_noise(std=noise_multiplier, reference=counts, secure_mode=secure_mode)
    share = noisy.clamp(min=0.0) + noise_multiplier
    share[0] = share[1:].min()  # padding: never scored
    return (share / share[1:].sum()).log()


def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant,
    before: list[tuple[float, float, int]],
) -> float:  # fmt: skip
    """The DP-SGD noise multiplier at which ``before`` (earlier mechanisms, as Opacus history
    entries) and ``steps`` steps at ``sample_rate`` spend ``target_epsilon`` together: Opacus'
    ``get_noise_multiplier`` bisection, over the composed history."""
    from opacus.accountants import create_accountant

    if not before:
        from opacus.accountants.utils import get_noise_multiplier

        return get_noise_multiplier(
            target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
            accountant=accountant,
        )  # fmt: skip
    counter = create_accountant(accountant)

    def spent(sigma: float | None = None) -> float:
        """ε of ``before``, plus the DP-SGD steps at noise multiplier ``sigma`` if given."""
        counter.history = [*before] + ([] if sigma is None else [(sigma, sample_rate, steps)])
        with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 - q), -inf for the prior's q = 1
            return float(counter.get_epsilon(delta=delta))

    if spent() >= target_epsilon:
        raise PrivacyError(
            f"DifferentialPrivacy: the popularity prior alone spends ε >= {target_epsilon} at δ={delta:.3g}; "
            "raise prior_noise_multiplier or epsilon"
        )
    low, high = 0.0, 10.0
    while spent(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise PrivacyError(f"DifferentialPrivacy: no noise reaches ε={target_epsilon} with the popularity prior")
    while target_epsilon - spent(high) > 0.01:
        sigma = (low + high) / 2
        if spent(sigma) < target_epsilon:
            high = sigma
        else:
            low = sigma
    return high


class DifferentialPrivacy(Callback):
    """User-level DP-SGD for any :class:`~attnrec.Recommender` trained on a
    :class:`~attnrec.data.SequenceDataModule` (see this module's docstring for the mechanism).

    ``epsilon`` is the target: the noise multiplier is calibrated by Opacus'
    ``get_noise_multiplier`` for the run's planned steps (``max_epochs`` or ``max_steps``), so
    the run ends at or just below it. Or give ``noise_multiplier`` (and ``epsilon=None``): then
    ε is only reported. ``delta`` defaults to ``1 / number of users`` (the benchmark's
    protocol; a smaller δ is a stronger guarantee). ``sample_rate`` (the probability of
    drawing a user in a step) defaults to the data module's ``batch_size`` over the number of
    training users, so the expected batch size stays the configured one; an epoch is
    ``1 / sample_rate`` steps. The ε spent is logged per epoch (``privacy/epsilon``) and
    added to the protocol printed with the test metrics. Per-user gradients are computed in one
    ``torch.func.vmap`` pass (``vectorized``), or by a loop over users where vmap cannot batch
    the model (a warning says why) or ``vectorized=False``; both give the same gradients.
    ``prior_noise_multiplier`` releases a popularity prior into the model's ``item_bias``
    before the first step (see this module's docstring; needs ``Recommender(item_bias=True)``
    and the RDP or PRV accountant), inside the same ε.

    From the CLI: ``attnrec fit --trainer.callbacks+=DifferentialPrivacy
    --trainer.callbacks.epsilon=8 --trainer.callbacks.max_grad_norm=1.0``.
    """

    def __init__(
        self,
        epsilon: float | None = 8.0,
        delta: float | None = None,
        max_grad_norm: float = 1.0,
        noise_multiplier: float | None = None,
        sample_rate: float | None = None,
        accountant: Accountant = "rdp",
        secure_mode: bool = False,
        vectorized: bool = True,
        prior_noise_multiplier: float | None = None,
    ) -> None:
        if (epsilon is None) == (noise_multiplier is None):
            raise PrivacyError(
                "DifferentialPrivacy: give either epsilon (the target; the noise is calibrated to it) or "
                f"noise_multiplier (epsilon=None; ε is then reported), got epsilon={epsilon}, "
                f"noise_multiplier={noise_multiplier}"
            )
        if epsilon is not None and not epsilon > 0:
            raise PrivacyError(f"DifferentialPrivacy: epsilon={epsilon} must be positive (no noise: leave it out)")
        if max_grad_norm <= 0:
            raise PrivacyError(f"DifferentialPrivacy: max_grad_norm={max_grad_norm} must be positive")
        if sample_rate is not None and not 0 < sample_rate <= 1:
            raise PrivacyError(f"DifferentialPrivacy: sample_rate={sample_rate} must be in (0, 1]")
        if prior_noise_multiplier is not None:
            if not prior_noise_multiplier > 0:
                raise PrivacyError(f"DifferentialPrivacy: prior_noise_multiplier={prior_noise_multiplier} must be positive")
            if accountant == "gdp":
                raise PrivacyError(
                    "DifferentialPrivacy: the gdp accountant composes identical steps only, so it cannot count the "
                    "popularity prior's query; use accountant='rdp' or 'prv'"
                )
        self.target_epsilon = epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.accountant_name: Accountant = accountant
        self.secure_mode = secure_mode
        self.vectorized = vectorized
        self.prior_noise_multiplier = prior_noise_multiplier
        self.sequences: list[np.ndarray] = []
        self.history: list[tuple[float, float, int]] = []  # Opacus' (noise multiplier, sample rate, steps)
        self.num_users = 0
        self.accountant: Any = None
        self.optimizer: Any = None
        self.batch: dict[str, Tensor] | None = None
        self.buffers: dict[str, Tensor] | None = None

    # ----------------------------------------------------------------- checks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from .data.datamodule import SequenceDataModule
        from .model import Recommender

        if not isinstance(pl_module, Recommender):
            raise PrivacyError(f"DifferentialPrivacy trains attnrec Recommenders, got {type(pl_module).__name__}")
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, SequenceDataModule):
            raise PrivacyError(
                f"DifferentialPrivacy needs a SequenceDataModule (it draws users through its train_batch_sampler), got "
                f"{type(datamodule).__name__}: give the data as a data module built on attnrec.data.SequenceDataModule"
            )
        if trainer.world_size > 1:
            raise PrivacyError("DifferentialPrivacy runs on one device (its user sampling is not distributed)")
        if trainer.accumulate_grad_batches != 1:
            raise PrivacyError(
                f"DifferentialPrivacy: accumulate_grad_batches={trainer.accumulate_grad_batches} would sum several "
                "noisy steps per update; raise the data's batch_size (the expected number of users per step) instead"
            )
        if trainer.gradient_clip_val:
            raise PrivacyError(
                "DifferentialPrivacy clips each user's gradient itself (max_grad_norm); unset the trainer's "
                "gradient_clip_val"
            )
        if datamodule.num_negatives and datamodule.negative_sampling == "popularity":
            raise PrivacyError(
                "DifferentialPrivacy: negative_sampling='popularity' draws negatives from every user's training "
                "interactions outside the gradient; use --data.init_args.negative_sampling=uniform"
            )
        if datamodule.num_negatives and datamodule.shared_negatives:
            raise PrivacyError(
                "DifferentialPrivacy computes each user's gradient on their own rows, and shared_negatives=True "
                "draws one list for the whole batch; use --data.init_args.shared_negatives=false"
            )
        check_private(pl_module)
        if self.prior_noise_multiplier is not None and pl_module.item_bias is None:
            raise PrivacyError(
                f"DifferentialPrivacy: prior_noise_multiplier puts a popularity prior in the model's item_bias, and "
                f"{type(pl_module).__name__} has none; build it with item_bias=True (--model.item_bias=true)"
            )
        datamodule.train_batch_sampler = self.batch_sampler
        if self.delta is None:
            self.delta = 1.0 / max(1, datamodule.num_users)
        self.default_batch_size = datamodule.batch_size

    def batch_sampler(self, windows: TrainWindows) -> UserPoissonSampler:
        """The data module's :attr:`train_batch_sampler`: users drawn at this run's sample rate."""
        users = len(np.unique(windows.index[:, 0]))
        if users == 0:
            raise PrivacyError("DifferentialPrivacy: no user has a training window")
        rate = self.sample_rate if self.sample_rate is not None else min(1.0, self.default_batch_size / users)
        self.sample_rate, self.num_users = rate, users
        self.sequences = windows.sequences
        return UserPoissonSampler(windows, rate)

    # ---------------------------------------------------------------- training
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        from .model import Recommender

        trainer.fit_loop.setup_data()  # builds the train loader, hence the sampler
        total = trainer.estimated_stepping_batches
        loader = trainer.train_dataloader
        if not isinstance(getattr(loader, "batch_sampler", None), UserPoissonSampler):
            raise PrivacyError(
                f"DifferentialPrivacy: {type(trainer.datamodule).__name__}.train_dataloader does not use its "
                "train_batch_sampler, so users are not drawn by Poisson sampling and no ε would hold"
            )
        if not math.isfinite(total):
            raise PrivacyError("DifferentialPrivacy needs a finite run to calibrate its noise: set max_epochs or max_steps")
        assert self.sample_rate is not None and self.delta is not None
        prior = [] if self.prior_noise_multiplier is None else [(self.prior_noise_multiplier, 1.0, 1)]
        if self.target_epsilon is not None:
            self.noise_multiplier = calibrate_noise(
                self.target_epsilon, self.delta, self.sample_rate, int(total), self.accountant_name, prior
            )
        # a resumed run's history (load_state_dict) holds its prior's query, and its weights the
        # released prior; consumed here, so a callback reused for a fresh fit starts afresh
        history, self.history = self.history, []
        if prior and not history:
            assert self.prior_noise_multiplier is not None and isinstance(pl_module, Recommender)
            assert pl_module.item_bias is not None
            released = release_popularity_prior(
                self.sequences, pl_module.catalog.num_items, self.prior_noise_multiplier, self.secure_mode
            )
            with torch.no_grad():
                pl_module.item_bias.copy_(released.to(pl_module.item_bias))
            history = list(prior)
        if len(trainer.strategy.optimizers) != 1:
            raise PrivacyError(f"DifferentialPrivacy wraps one optimizer, the model has {len(trainer.strategy.optimizers)}")
        self.accountant = create_accountant(self.accountant_name)
        self.accountant.history = history
        assert self.noise_multiplier is not None
        self.optimizer = DPOptimizer(
            trainer.strategy.optimizers[0],
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=max(1, round(self.sample_rate * self.num_users)),
            loss_reduction="mean",
            secure_mode=self.secure_mode,
        )
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        trainer.strategy.optimizers = [self.optimizer]  # the LR schedule keeps the wrapped one's param groups

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        users = batch["user"]
        if users.unique().numel() != users.numel():
            raise PrivacyError("DifferentialPrivacy: a training batch holds a user twice; the privacy unit is broken")
        self.batch = batch
        self.buffers = {name: b.detach().clone() for name, b in pl_module.named_buffers()}

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        assert self.batch is not None and self.buffers is not None
        changed = changed_buffers(pl_module, self.buffers)
        if changed is not None:
            raise PrivacyError(
                f"DifferentialPrivacy: buffer '{changed}' changed in a training forward: the layer learns from the "
                "data outside the gradient, where no noise protects it; make it a parameter or keep it constant"
            )
        params = self.optimizer.params
        grads = None
        if self.vectorized:
            try:
                grads = vectorized_user_gradients(pl_module, self.batch, params)  # type: ignore[arg-type]
            except Exception as error:  # whatever vmap cannot batch; the loop reruns the model plainly
                self.vectorized = False
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                rank_zero_warn(
                    f"DifferentialPrivacy: torch.func.vmap cannot batch {type(pl_module).__name__}'s training loss "
                    f"({type(error).__name__}: {reason[:200]}); per-user gradients by a loop over users (slower)"
                )
        if grads is None:
            grads = per_user_gradients(pl_module, self.batch, params)  # type: ignore[arg-type]
        for p, g in zip(params, grads):
            p.grad_sample = g
        self.batch = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log("privacy/epsilon", self.epsilon, prog_bar=True)

    # --------------------------------------------------------------- reporting
    @property
    def steps(self) -> int:
        """DP-SGD steps taken (the popularity prior's query is not one)."""
        if self.accountant is None or not self.accountant.history:
            return 0
        return sum(int(n) for _, _, n in self.accountant.history) - (self.prior_noise_multiplier is not None)

    @property
    def epsilon(self) -> float:
        """The ε spent so far at :attr:`delta`, by Opacus' accountant (0 before any step)."""
        if self.accountant is None or not self.accountant.history:
            return 0.0
        with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 - q), -inf for the prior's q = 1
            return max(0.0, float(self.accountant.get_epsilon(delta=self.delta)))  # RDP rounds a tiny q below 0

    def describe(self) -> str:
        prior = "" if self.prior_noise_multiplier is None else (
            f"; popularity prior by a Gaussian count query, noise multiplier {self.prior_noise_multiplier:g}"
        )  # fmt: skip
        return (
            f"user-level DP-SGD (epsilon={self.epsilon:.3g} at delta={self.delta:.3g}, {self.accountant_name.upper()} "
            f"accountant; noise multiplier {self.noise_multiplier:.3g}, clip {self.max_grad_norm:g}, sample rate "
            f"{self.sample_rate:.3g} of {self.num_users} users, {self.steps} steps{prior})"
        )

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.steps and isinstance(getattr(pl_module, "protocol", None), dict):
            pl_module.protocol["privacy"] = self.describe()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """The guarantee travels with the weights: evaluating the checkpoint later (``attnrec
        test --ckpt_path``, without this callback) still prints it in the protocol line."""
        if self.steps:
            checkpoint["attnrec_privacy"] = self.describe()

    def state_dict(self) -> dict[str, Any]:
        history = self.accountant.history if self.accountant is not None else self.history
        return {
            "history": [[float(s), float(q), int(n)] for s, q, n in history],
            "prior_noise_multiplier": self.prior_noise_multiplier,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed run keeps counting the steps taken before it, with the prior it was
        trained with (another would be calibrated and counted wrongly)."""
        prior = state_dict.get("prior_noise_multiplier")
        if prior != self.prior_noise_multiplier:
            raise PrivacyError(
                f"DifferentialPrivacy: the checkpoint was trained with prior_noise_multiplier={prior}, this run has "
                f"{self.prior_noise_multiplier}; resume with the checkpoint's setting, or ε would be miscounted"
            )
        self.history = [(float(s), float(q), int(n)) for s, q, n in state_dict.get("history", [])]
        if self.accountant is not None:  # restored after on_fit_start (strategies that restore late)
            self.accountant.history = list(self.history)


# ------------------------------------------------------------ membership probe
def hold_out_users(split: Split, fraction: float, seed: int = 0) -> tuple[Split, list[np.ndarray]]:
    """For a membership-inference probe: a copy of ``split`` in which a random ``fraction`` of
    the users with training interactions keep none (nor validation/test lists), and those
    users' training sequences (index = user id; empty for members). A data module's
    ``build_split`` returns the first, so the held-out users are never trained on."""
    from .data.interactions import Split

    rng = np.random.default_rng(seed)
    users = np.asarray([u for u in range(1, len(split.train)) if len(split.train[u]) > 1])
    out = set(rng.choice(users, size=round(fraction * len(users)), replace=False).tolist())
    empty = np.zeros(0, dtype=np.int64)
    held = [seq if u in out else empty for u, seq in enumerate(split.train)]

    def keep(parts: list[np.ndarray]) -> list[np.ndarray]:
        return [empty if u in out else seq for u, seq in enumerate(parts)]

    return Split(keep(split.train), keep(split.val), keep(split.test)), held


def window_loader(datamodule: SequenceDataModule, sequences: list[np.ndarray], batch_size: int = 256) -> DataLoader:
    """Training windows of ``sequences`` (index = user id), in order, collated as for training:
    what :func:`attnrec.evaluation.user_losses` reads."""
    from .data.sequences import TrainWindows

    windows = TrainWindows(sequences, datamodule.max_len, datamodule.window_stride)
    return DataLoader(windows, batch_size=batch_size, collate_fn=datamodule.collate_fn("train"))
