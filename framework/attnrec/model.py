"""The Recommender: item encoder + user encoder + scorer + loss + evaluation."""

from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
from contextvars import ContextVar
from typing import Any, Callable, Literal, NamedTuple, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor

from .checkpoints import CheckpointError, add_checksum, read_checkpoint, verify
from .encoders import IdItemEncoder, TransformerUserEncoder
from .evaluation import Ranking, RankingEvaluator, Scoring, VectorScoring, rank_candidates, rank_full
from .interfaces import Batch, ItemCatalog, ItemEncoder, Loss, RecDataModule, Scorer, UserEncoder, UserEncoding
from .losses import CrossEntropyLoss
from .metrics import metric_legend
from .scorers import DotScorer

# The evaluator's figures are already reduced across processes (float64 sums), so they are
# logged without sync_dist; Lightning's advice to sync them would only average equal values.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/")

ItemEncoderFactory = Callable[[ItemCatalog, int], ItemEncoder]
"""Builds the item encoder from ``(catalog, dim)``: a class or a ``functools.partial`` of one
(in YAML, ``class_path`` + ``init_args`` without those two)."""
UserEncoderFactory = Callable[[int], UserEncoder]
"""Builds the user encoder from ``dim`` (and the data's ``max_len`` when it takes one)."""
ScorerFactory = Callable[[int], Scorer]
"""Builds the scorer from ``dim``."""
LossFactory = Callable[[], Loss]
"""Builds the loss: a :class:`~attnrec.interfaces.Loss` class or a partial of one."""
_LOADING: ContextVar[str | None] = ContextVar("attnrec_loading_checkpoint", default=None)
"""The file ``load_from_checkpoint`` is reading, for ``on_load_checkpoint``'s error messages."""
BUILT_COMPONENTS = ("item_encoder", "user_encoder", "scorer")
"""The factory arguments a ready-made model builds from its own arguments: it calls
``self.save_hyperparameters(ignore=["catalog", *BUILT_COMPONENTS])`` after ``super().__init__``,
so a checkpoint rebuilds it from its own signature (Lightning passes every saved
hyper-parameter to a class that takes ``**kwargs``)."""


class Examples(NamedTuple):
    """The training examples of a batch: one per (row, history position) with a target."""

    rows: Tensor  # [M] batch row
    positions: Tensor  # [M] history position (the last one for encoders without all_positions)
    positive: Tensor  # [M] target item id
    negatives: Tensor | None  # [M, K] sampled items, when the data provides them


def example_negatives(batch: Batch, rows: Tensor, positions: Tensor) -> Tensor | None:
    """The sampled negatives ``[M, K]`` of the examples at ``rows, positions``: the batch's
    per-position ``negatives [B, L, K]``, or its ``shared_negatives [K]`` (one draw for every
    position) broadcast as a view; None when the batch has neither. For a model's own
    :meth:`Recommender.training_examples`."""
    if "shared_negatives" in batch:
        return batch["shared_negatives"].expand(len(rows), -1)
    negatives = batch.get("negatives")
    return None if negatives is None else negatives[rows, positions]


class Recommender(L.LightningModule):
    """Composes encoders and a scorer with a loss, AdamW and a warm-up/cosine schedule.

    Components are given as factories that receive what the data decides (the ``catalog`` and
    ``max_len``, linked from the data module by the CLI) and the one shared width ``dim``, so a
    config cannot build an item encoder and a user encoder of different widths, nor set the
    history length twice.

    ``loss`` is a :class:`~attnrec.interfaces.Loss` (by class name on the CLI:
    ``--model.loss=SampledSoftmaxLoss``): ``CrossEntropyLoss`` over the catalogue, or a sampled
    one (``SampledSoftmaxLoss``, ``BCELoss``, ``BPRLoss``, ``GBCELoss``) that needs a data
    module with ``num_negatives >= 1``. Causal sequence encoders train on every position.

    Training and evaluation score items through one object, :meth:`scoring`; a target-aware
    model overrides only that. The public hooks a subclass may override instead of the
    training step: :meth:`training_examples`, :meth:`example_weights`,
    :meth:`candidate_items`, :meth:`regularization`, :meth:`evaluation_slices`,
    :meth:`evaluate_batch` and :meth:`evaluation_results`.

    Validation/test rank every catalogue item with seen items masked (``full``), or the batch's
    ``candidates`` (sampled negatives or impressions) when the data provides them.
    ``history_slices=(5, 20)`` adds the same metrics over the lists whose user had at most 5
    (20) items of history, logged as ``history<=5/<metric>`` with ``history<=5/lists``; see
    :meth:`evaluation_slices` for slices of one's own.

    ``item_bias=True`` adds a learned score offset per item, ``score(u, i) = scorer(u, v_i) +
    b_i`` (``item_bias [N + 1]``, zeros at start, no weight decay): room for an item's overall
    appeal (popularity) beside the personal match, and where private training puts a released
    popularity prior (``DifferentialPrivacy(prior_noise_multiplier=...)``). The default
    scoring adds it everywhere it scores — training, ranking, exports and ANN indexes (as one
    more coordinate of the inner-product space); a model with its own :meth:`scoring` adds
    ``item_bias[ids]`` itself.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 64,
        item_encoder: ItemEncoderFactory = IdItemEncoder,
        user_encoder: UserEncoderFactory = TransformerUserEncoder,
        scorer: ScorerFactory = DotScorer,
        loss: LossFactory | str = CrossEntropyLoss,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: Literal["cosine", "constant"] = "cosine",
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "Recall", "AUC"),
        ks: Sequence[int] = (10, 20),
        item_chunk_size: int = 65536,
        max_len: int | None = None,
        history_slices: Sequence[int] = (),
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        # The catalog travels in the checkpoint on its own (see on_save_checkpoint): it holds
        # tensors, and hyper-parameters must stay plain for `weights_only` loading. An unset
        # max_len is not recorded: Lightning's loggers refuse max_len=None beside the data's value.
        self.save_hyperparameters(ignore=["catalog"] + (["max_len"] if max_len is None else []))
        self.catalog = catalog
        self.item_encoder = item_encoder(catalog, dim)
        self.user_encoder = build_user_encoder(user_encoder, dim, max_len)
        self.scorer = scorer(dim)
        self.item_bias = torch.nn.Parameter(torch.zeros(catalog.num_items + 1)) if item_bias else None
        from .plugins import get_component

        self.loss = (get_component("losses", loss) if isinstance(loss, str) else loss)()
        if not isinstance(self.loss, Loss):
            raise TypeError(f"loss must build an attnrec Loss, got {type(self.loss).__name__}")
        self.loss.bind(catalog.num_items)
        # kept as attributes: a subclass's own save_hyperparameters() records its signature only
        self.lr, self.weight_decay, self.warmup_steps, self.schedule = lr, weight_decay, warmup_steps, schedule
        self.item_chunk_size = item_chunk_size
        self.ks = sorted(set(ks))
        self.metric_objects = [get_component("metrics", name)() for name in metrics]
        self.evaluator = self._evaluator(None)
        self.history_slices = sorted(set(history_slices))
        self._check_history_slices(max_len)
        # one evaluator per slice name, made at the slice's first batch (names are fixed per model)
        self.slice_evaluators = torch.nn.ModuleDict()
        self.protocol: dict[str, str] = {}
        # other models' test figures under the same protocol, printed beside this one's
        self.reference_results: dict[str, dict[str, float]] = {}
        # the privacy guarantee a checkpoint was trained under (attnrec.privacy), for the protocol
        self.privacy: str | None = None

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep checkpoints self-describing, self-contained and ``weights_only``-safe: factories
        become ``class_path``/``init_args`` specs that jsonargparse (hence
        ``load_from_checkpoint`` and ``attnrec validate --ckpt_path``) turns back into
        factories; the catalog and the serving data (users' id map and histories, see
        :mod:`attnrec.data.serving`) travel as plain containers and tensors; a checksum over
        the tensors, recorded last, lets every load detect a modified file."""
        checkpoint["attnrec_catalog"] = self.catalog.state()
        hparams = {key: to_spec(value) for key, value in checkpoint.get("hyper_parameters", {}).items()}
        hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
        hparams.setdefault("_instantiator", "lightning.pytorch.cli.instantiate_module")
        checkpoint["hyper_parameters"] = hparams
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and "datamodule_hyper_parameters" in checkpoint:
            dm_hparams = dict(checkpoint["datamodule_hyper_parameters"])
            dm_hparams.setdefault("_class_path", f"{type(datamodule).__module__}.{type(datamodule).__qualname__}")
            dm_hparams.setdefault("_instantiator", "lightning.pytorch.cli.instantiate_module")
            checkpoint["datamodule_hyper_parameters"] = dm_hparams
        from .data.serving import serving_state  # the data package is heavy; `import attnrec` stays light

        serving = serving_state(datamodule) if datamodule is not None else None
        if serving is not None:
            checkpoint["attnrec_serving"] = serving
        add_checksum(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose tensors no longer match their checksum, or one trained on
        another catalogue than this model's (the data given now), with errors that say which
        file and which sizes or ids differ instead of a raw ``load_state_dict`` mismatch."""
        source = _LOADING.get() or str(getattr(self._trainer, "ckpt_path", None) or "the checkpoint")
        verify(checkpoint, source)
        check_catalog(checkpoint, self, source)
        self.privacy = checkpoint.get("attnrec_privacy", self.privacy)
        if self.privacy:  # trainer.test(ckpt_path=...) restores after setup() built the protocol
            self.protocol["privacy"] = self.privacy

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any) -> Recommender:  # type: ignore[override]
        """As Lightning's, with the catalog restored from the checkpoint unless one is given,
        the content checksum verified, and a missing, empty or cut-short file reported as a
        :class:`~attnrec.checkpoints.CheckpointError` naming it. Called on a base class, it
        builds the checkpoint's own (already imported) subclass: Lightning would build
        ``cls`` and drop the subclass's extra arguments."""
        state = read_checkpoint(checkpoint_path, check=False)  # verified once, in on_load_checkpoint
        if "catalog" not in kwargs:
            kwargs["catalog"] = ItemCatalog.from_state(state["attnrec_catalog"])
        saved = _imported_class(state.get("hyper_parameters", {}).get("_class_path"))
        if saved is not None and saved is not cls and issubclass(saved, cls):
            return saved.load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        token = _LOADING.set(str(checkpoint_path))
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        finally:
            _LOADING.reset(token)

    # -------------------------------------------------------------- encoding
    def encode_users(self, batch: Batch, all_positions: bool = False, need_weights: bool = False) -> UserEncoding:
        return self.user_encoder(batch, self.item_encoder, all_positions=all_positions, need_weights=need_weights)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """The scorer's match of user and item vectors — without ``item_bias``, which needs the
        items' ids: :meth:`scoring` gives the model's full scores."""
        return self.scorer(users, items)

    # -------------------------------------------------------------- training
    def training_examples(self, batch: Batch) -> Examples:
        """Which (row, position) pairs of a training batch are examples: every position with a
        target for all-position (causal) encoders, else the last one."""
        target = batch["target"]
        if self.user_encoder.all_positions:
            rows, positions = (target != 0).nonzero(as_tuple=True)
        else:
            rows = (target[:, -1] != 0).nonzero().flatten()
            positions = torch.full_like(rows, target.shape[1] - 1)
        return Examples(rows, positions, target[rows, positions], example_negatives(batch, rows, positions))

    def example_weights(self, batch: Batch, examples: Examples) -> Tensor | None:
        """Per-example loss weights ``[M]``: the batch's ``target_weight [B, L]`` when it has one
        (graded relevance such as a watch ratio), else None (a plain mean)."""
        weight = batch.get("target_weight")
        return None if weight is None else weight[examples.rows, examples.positions].float()

    def candidate_items(self) -> Tensor | None:
        """``[N + 1]`` bool of the items that may be training candidates (None: every item but
        padding). An item left out is never a negative, nor a column of the softmax."""
        return None

    def regularization(self, batch: Batch, examples: Examples) -> Tensor | float:
        """A term added to the batch's loss (e.g. an L2 penalty on the embeddings used)."""
        return 0.0

    def candidate_logits(self, batch: Batch, examples: Examples) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits [M, C], positive [M], mask [M, C])`` for the loss: the whole catalogue or the
        positive plus sampled negatives (log-Q corrected when the loss asks for it), scored
        through :meth:`scoring` like evaluation. Negatives shared by the batch
        (``shared_negatives``) are scored by the scoring's ``common`` when it has one (one
        product for all examples) and masked where they hit the example's positive."""
        scoring = self.scoring(batch, examples)
        allowed = self._allowed(examples.positive.device)
        if self.loss.candidates == "catalog":
            logits = scoring.chunk(0, self.catalog.num_items + 1)
            return logits, examples.positive, allowed.expand_as(logits)
        if examples.negatives is None:
            raise ValueError(
                f"{type(self.loss).__name__} learns from sampled negatives, and the batch has none: set the data "
                "module's num_negatives to at least 1 (or use loss=CrossEntropyLoss)"
            )
        positive = examples.positive.unsqueeze(1)
        shared = batch.get("shared_negatives")
        if shared is not None:
            common = getattr(scoring, "common", None)
            negative = common(shared) if common is not None else scoring.items(examples.negatives)
            logits = torch.cat([scoring.items(positive), negative], dim=1)
            mask = torch.cat([torch.ones_like(positive, dtype=torch.bool), allowed[shared] & (shared != positive)], dim=1)
        else:
            ids = torch.cat([positive, examples.negatives], dim=1)  # [M, 1 + K]
            logits = scoring.items(ids)
            mask = allowed[ids] & (ids != positive)  # accidental hits are no negatives
            mask[:, 0] = True
        if self.loss.log_q_correction and "target_logq" in batch:
            target_logq = batch["target_logq"][examples.rows, examples.positions].unsqueeze(1)
            if shared is not None:
                logq = torch.cat([target_logq, batch["shared_negatives_logq"].expand(len(target_logq), -1)], dim=1)
            else:
                logq = torch.cat([target_logq, batch["negatives_logq"][examples.rows, examples.positions]], dim=1)
            logits = logits - logq
        return logits, torch.zeros_like(examples.positive), mask

    def _allowed(self, device: torch.device) -> Tensor:
        allowed = self.candidate_items()
        if allowed is None:
            allowed = torch.ones(self.catalog.num_items + 1, dtype=torch.bool, device=device)
        allowed = allowed.clone()
        allowed[0] = False
        return allowed

    def _fused_catalog_loss(self) -> bool:
        """Whether the loss computes itself from the default scoring's dot products without the
        ``[M, N]`` logits (:meth:`~attnrec.interfaces.Loss.catalog_loss`): a ``"catalog"`` loss
        whose class defines it without a ``forward`` overridden below that definition, a
        ``DotScorer``, and no subclass ``scoring`` or ``candidate_logits``."""
        cls, loss = type(self), type(self.loss)
        owner = next(c for c in loss.__mro__ if "catalog_loss" in vars(c))
        return (
            loss.candidates == "catalog"
            and owner is not Loss
            and loss.forward is owner.forward
            and type(self.scorer) is DotScorer
            and cls.scoring is Recommender.scoring
            and cls.candidate_logits is Recommender.candidate_logits
        )

    def training_loss(self, batch: Batch) -> tuple[Tensor, Examples]:
        """The loss of a training batch — the (weighted) mean over its examples plus
        :meth:`regularization` — and those examples. :meth:`training_step` logs and returns it;
        differentially private training (:mod:`attnrec.privacy`) calls it on one user's row at
        a time, so each user's gradient is that of their own mean loss."""
        examples = self.training_examples(batch)
        if self._fused_catalog_loss():
            scoring = self.scoring(batch, examples)
            assert isinstance(scoring, VectorScoring)
            per_example = self.loss.catalog_loss(*scoring.inner_product(), examples.positive,
                                                 self._allowed(examples.positive.device))  # fmt: skip
        else:
            per_example = self.loss(*self.candidate_logits(batch, examples))
        weights = self.example_weights(batch, examples)
        if weights is None:
            loss = per_example.mean()
        else:
            loss = (per_example * weights).sum() / weights.sum().clamp(min=1e-12)
        return loss + self.regularization(batch, examples), examples

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, examples = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(examples.rows))
        return loss

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        warmup = self.warmup_steps
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        cosine = self.schedule == "cosine" and math.isfinite(total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------ evaluation
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(datamodule, RecDataModule):
            if self.loss.candidates == "sampled" and getattr(datamodule, "num_negatives", None) == 0:
                rank_zero_warn(
                    f"{type(self.loss).__name__} learns from sampled negatives and {type(datamodule).__name__} has "
                    "num_negatives=0: drawing 1 per target (set --data.init_args.num_negatives to choose)"
                )
                datamodule.num_negatives = 1
            self.evaluator = self._evaluator(datamodule)
            self._check_history_slices(datamodule.max_len)
            self.protocol = dict(datamodule.protocol) | {"model": type(self).__name__, "loss": type(self.loss).__name__}
            if self.privacy:
                self.protocol["privacy"] = self.privacy

    def _check_history_slices(self, max_len: int | None) -> None:
        """A history is counted in the batch's window of at most ``max_len`` items, so a bound
        of ``max_len`` or more would put truncated long histories in the slice."""
        if self.history_slices and (self.history_slices[0] < 0 or max_len is not None and self.history_slices[-1] >= max_len):
            raise ValueError(
                f"history_slices={self.history_slices}: each bound must be >= 0 and below the data's max_len={max_len}, "
                "since a history is counted in the batch's window of at most max_len items"
            )

    def _evaluator(self, datamodule: RecDataModule | None) -> RankingEvaluator:
        return RankingEvaluator(
            self.metric_objects,
            self.ks,
            self.catalog.num_items,
            num_users=datamodule.num_users if datamodule is not None else None,
            popularity=self.catalog.popularity,
        )

    def scoring(self, batch: Batch, examples: Examples | None = None) -> Scoring:
        """How this model scores items for a batch's users (evaluation), or for the users as of
        each training example's position (``examples``). Target-aware models (DIN, BST), whose
        user representation depends on the item, override this; training and evaluation both
        go through it."""
        if examples is None:
            users = self.encode_users(batch).vectors
        elif self.user_encoder.all_positions:
            users = self.encode_users(batch, all_positions=True).vectors[examples.rows, examples.positions]
        else:
            users = self.encode_users(batch).vectors[examples.rows]
        return VectorScoring(users, self.item_encoder, self.scorer, self.item_bias)

    def rank(self, batch: Batch) -> Ranking:
        """Rank the batch's candidates, or the whole catalogue with seen items masked."""
        scoring = self.scoring(batch)
        k = max(self.ks)
        if "candidates" in batch:
            return rank_candidates(scoring.items(batch["candidates"]), batch["candidates"], batch["labels"], k)
        return rank_full(
            scoring, self.catalog.num_items + 1, batch["targets"], batch.get("seen"), k, self.item_chunk_size
        )

    def evaluation_slices(self, batch: Batch) -> dict[str, Tensor]:
        """Named subsets of an evaluation batch's lists, ``{name: [B] bool}``: each slice gets
        the model's metrics over its lists alone, logged as ``<name>/<metric>`` with
        ``<name>/lists`` (how many lists it averages), exact across processes like the main
        figures. A subclass adds its own (cold users, say) to these; it must return the same
        names for every batch. The default: ``history<=k`` for each of ``history_slices``,
        counting the non-padding items of the batch's history window."""
        if not self.history_slices:
            return {}
        length = (batch["history"] != 0).sum(dim=1)
        return {f"history<={k}": length <= k for k in self.history_slices}

    def evaluate_batch(self, batch: Batch) -> Ranking:
        """Rank one evaluation batch and add it to the metrics and to its slices' metrics
        (:meth:`evaluation_slices`); a subclass with metrics of its own (graded gains, say)
        extends this and :meth:`evaluation_results`."""
        ranking = self.rank(batch)
        users = batch.get("user")
        self.evaluator.update(ranking, users)
        for name, rows in self.evaluation_slices(batch).items():
            if name not in self.slice_evaluators:
                evaluator = RankingEvaluator(self.metric_objects, self.ks, self.catalog.num_items)
                self.slice_evaluators[name] = evaluator.to(ranking.ranks.device)
            if bool(rows.any()):
                self.slice_evaluators[name].update(Ranking(*(x[rows] for x in ranking)))
        return ranking

    def evaluation_results(self) -> dict[str, float]:
        """The metrics gathered since the last call (exact across processes), then reset."""
        results = {name: float(value) for name, value in self.evaluator.compute().items()}
        self.evaluator.reset()
        for name, evaluator in self.slice_evaluators.items():
            with evaluator.sync_context():  # the count over all processes, as compute() sees it
                lists = float(evaluator.lists)
            if lists:  # an empty slice has no metrics (not zeros); every process sees the same count
                results |= {f"{name}/{metric}": float(value) for metric, value in evaluator.compute().items()}
            results[f"{name}/lists"] = lists
            evaluator.reset()
        return results

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate_batch(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate_batch(batch)

    def _log_evaluation(self, stage: str) -> dict[str, float]:
        results = self.evaluation_results()
        shown = next((name for name in (f"NDCG@{self.ks[0]}", f"HR@{self.ks[0]}") if name in results), None)
        if stage != "val":
            shown = None
        self.log_dict({f"{stage}/{name}": value for name, value in results.items() if name != shown}, sync_dist=False)
        if shown is not None:  # the progress bar shows what the default checkpoint watches
            self.log(f"{stage}/{shown}", results[shown], prog_bar=True, sync_dist=False)
        return results

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_evaluation("test")
        self._print_results("test", self.test_results)

    @rank_zero_only
    def _print_results(self, stage: str, results: dict[str, float]) -> None:
        from rich.console import Console
        from rich.table import Table

        protocol = ", ".join(f"{key}={value}" for key, value in self.protocol.items()) or "unknown (no RecDataModule)"
        table = Table(title=f"{stage} metrics")
        table.add_column("metric")
        table.add_column(type(self).__name__, justify="right")
        for other in self.reference_results:
            table.add_column(other, justify="right")
        for name, value in results.items():
            others = [self.reference_results[other].get(name) for other in self.reference_results]
            table.add_row(name, f"{value:.4f}", *("-" if v is None else f"{v:.4f}" for v in others))
        console = Console()
        console.print(table)
        legend = metric_legend(results)
        if legend:
            console.print(f"[bold]metrics[/bold]: {legend}")
        console.print(f"[bold]protocol[/bold]: {protocol}")

    # ---------------------------------------------------------- inference
    @torch.no_grad()
    def recommend(self, batch: Batch, k: int = 10, exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-k item ids ``[B, k]`` and their scores for the users described by ``batch``
        (``history``, and ``seen`` items to exclude, by default the history). Where fewer than
        ``k`` items are left, the list ends in item 0 with score ``-inf``."""
        scoring = self.scoring(batch)
        seen = batch.get("seen", batch["history"]) if exclude_seen else None
        no_targets = batch["history"].new_zeros(batch["history"].shape[0], 0)
        top = rank_full(scoring, self.catalog.num_items + 1, no_targets, seen, k, self.item_chunk_size).topk
        return top, scoring.items(top).masked_fill(top == 0, float("-inf"))

    @torch.no_grad()
    def attention_weights(self, batch: Batch) -> dict[str, Tensor]:
        """The user encoder's attention weights for a batch, by layer name."""
        return self.encode_users(batch, need_weights=True).weights or {}

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        items, scores = self.recommend(batch, k=max(self.ks))
        return {"user": batch["user"], "items": items, "scores": scores}


def build_user_encoder(factory: UserEncoderFactory, dim: int, max_len: int | None) -> UserEncoder:
    """The user encoder, given the data's ``max_len`` when it takes one: the history length is
    set once, on the data. A different value in the encoder's own spec (other than its
    signature's default, which config parsers spell out) is overridden with a warning."""
    target = factory_class(factory)
    if max_len is None or target is None or "max_len" not in inspect.signature(target).parameters:
        return factory(dim)
    given = factory.keywords.get("max_len") if isinstance(factory, functools.partial) else None
    default = inspect.signature(target).parameters["max_len"].default
    if given is not None and given not in (max_len, default):
        rank_zero_warn(
            f"the user encoder's max_len={given} is replaced by the data's max_len={max_len}: set it once, on the "
            "data (--data.init_args.max_len)"
        )
    return factory(dim, max_len=max_len)  # type: ignore[call-arg]


def factory_class(factory: Any) -> type | None:
    """The class a factory builds: itself, or the class inside a ``functools.partial`` (as
    written in Python, or as jsonargparse builds it around an instantiator)."""
    if isinstance(factory, type):
        return factory
    if isinstance(factory, functools.partial):
        return next((x for x in (factory.func, *factory.args) if isinstance(x, type)), None)
    return None


def to_spec(value: Any) -> Any:
    """A factory (class or ``functools.partial`` of one, as jsonargparse builds them) as a
    ``{"class_path", "init_args"}`` spec; other values unchanged. A class's factory-valued
    defaults are spelled out: given a bare class path, jsonargparse does not rebuild them as
    the signature says (``PoolingUserEncoder``'s ``AdditiveAttention`` came back as another
    attention, whose weights the checkpoint does not hold)."""
    if isinstance(value, type):
        spec: dict[str, Any] = {"class_path": f"{value.__module__}.{value.__qualname__}"}
        try:
            parameters = inspect.signature(value).parameters.values()
        except (TypeError, ValueError):  # classes without an inspectable signature
            parameters = []  # type: ignore[assignment]
        factories = {
            p.name: to_spec(p.default)
            for p in parameters
            if p.default is not inspect.Parameter.empty and isinstance(p.default, (type, functools.partial))
        }
        if factories:
            spec["init_args"] = factories
        return spec
    if isinstance(value, functools.partial):
        target = factory_class(value)
        if target is not None:
            spec = to_spec(target)
            if value.keywords:
                spec["init_args"] = spec.get("init_args", {}) | {k: to_spec(v) for k, v in value.keywords.items()}
            return spec
    if isinstance(value, (list, tuple)):
        return type(value)(to_spec(v) for v in value)
    return value


def check_catalog(checkpoint: dict[str, Any], model: Recommender, source: str) -> None:
    """Raise :class:`~attnrec.checkpoints.CheckpointError` when the checkpoint was trained on
    another catalogue than ``model``'s: different sizes (its parameters would not fit) or the
    same size with other item ids (every score would go to the wrong item)."""
    saved = checkpoint.get("attnrec_catalog")
    if saved is None:
        return
    own = model.state_dict()
    misfit = [
        f"{name} is {list(value.shape)} in the checkpoint, {list(own[name].shape)} here"
        for name, value in checkpoint.get("state_dict", {}).items()
        if name in own and own[name].shape != value.shape
    ]
    here = model.catalog
    if misfit:
        sizes = [
            f"{what}: {then} in the checkpoint, {now} here"
            for what, then, now in (
                ("items", saved["num_items"], here.num_items),
                ("users", saved.get("num_users", 0), here.num_users),
            )
            if then != now
        ]
        raise CheckpointError(
            f"{source}: trained on another catalogue ({'; '.join(sizes) or 'same sizes, other features'}): "
            f"{misfit[0]}. Evaluate it on the data it was trained on, or train a model on this data."
        )
    if saved["num_items"] == here.num_items and saved.get("raw_ids") != here.state()["raw_ids"]:
        first = next(i for i, (a, b) in enumerate(zip(saved["raw_ids"], here.state()["raw_ids"])) if a != b)
        raise CheckpointError(
            f"{source}: trained on another catalogue with as many items ({here.num_items}) but other ids: "
            f"internal id {first} is item {saved['raw_ids'][first]!r} in the checkpoint, {here.raw_ids[first]!r} "
            "here. Evaluate it on the data it was trained on, or train a model on this data."
        )


def _imported_class(path: Any) -> type | None:
    """The class at ``module.Name`` if its module is already imported (never imports: a
    checkpoint must not choose code to run)."""
    if not isinstance(path, str) or "." not in path:
        return None
    module, name = path.rsplit(".", 1)
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None
