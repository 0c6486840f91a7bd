"""The Recommender: item encoder + user encoder + scorer + loss + evaluation."""

from __future__ import annotations

import functools
import math
import sys
import warnings
from typing import Any, Callable, Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from .evaluation import Ranking, RankingEvaluator, Scoring, VectorScoring, rank_candidates, rank_full
from .encoders import IdItemEncoder, TransformerUserEncoder
from .interfaces import Batch, ItemCatalog, ItemEncoder, RecDataModule, Scorer, UserEncoder, UserEncoding
from .scorers import DotScorer

# The evaluator's figures are already reduced across processes (float64 sums), so they are
# logged without sync_dist; Lightning's advice to sync them would only average equal values.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/")

Loss = Literal["ce", "sampled_softmax", "bce", "bpr"]
ItemEncoderFactory = Callable[[ItemCatalog, int], ItemEncoder]
"""Builds the item encoder from ``(catalog, dim)``: a class or a ``functools.partial`` of one
(in YAML, ``class_path`` + ``init_args`` without those two)."""
UserEncoderFactory = Callable[[int], UserEncoder]
"""Builds the user encoder from ``dim``."""
ScorerFactory = Callable[[int], Scorer]
"""Builds the scorer from ``dim``."""


class Recommender(L.LightningModule):
    """Composes encoders and a scorer with a loss, AdamW and a warm-up/cosine schedule.

    Components are given as factories that receive what the data decides (the ``catalog``,
    linked from the data module by the CLI) and the one shared width ``dim``, so a config
    cannot build an item encoder and a user encoder of different widths.

    Losses: ``ce`` (softmax over the whole catalogue), ``sampled_softmax`` (target against the
    batch's ``negatives``, log-q corrected when the sampler provides ``negatives_logq``), ``bce``
    (target vs. each negative, SASRec's paper loss) and ``bpr``. The three sampled losses need a
    data module with ``num_negatives >= 1``. Causal sequence encoders train on every position.

    Validation/test rank every catalogue item with seen items masked (``full``), or the batch's
    ``candidates`` (sampled negatives or impressions) when the data provides them.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 64,
        item_encoder: ItemEncoderFactory = IdItemEncoder,
        user_encoder: UserEncoderFactory = TransformerUserEncoder,
        scorer: ScorerFactory = DotScorer,
        loss: Loss = "ce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: Literal["cosine", "constant"] = "cosine",
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "Recall", "AUC"),
        ks: Sequence[int] = (10, 20),
        item_chunk_size: int = 65536,
    ) -> None:
        super().__init__()
        # The catalog travels in the checkpoint on its own (see on_save_checkpoint): it holds
        # tensors, and hyper-parameters must stay plain for `weights_only` loading.
        self.save_hyperparameters(ignore=["catalog"])
        self.catalog = catalog
        self.item_encoder = item_encoder(catalog, dim)
        self.user_encoder = user_encoder(dim)
        self.scorer = scorer(dim)
        self.loss_name = loss
        self.ks = sorted(set(ks))
        from .plugins import get_component

        self.metric_objects = [get_component("metrics", name)() for name in metrics]
        self.evaluator = self._evaluator(None)
        self.protocol: dict[str, str] = {}

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep checkpoints self-describing and ``weights_only``-safe: factories become
        ``class_path``/``init_args`` specs that jsonargparse (hence ``load_from_checkpoint``
        and ``attnrec validate --ckpt_path``) turns back into factories."""
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

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any) -> Recommender:  # type: ignore[override]
        """As Lightning's, with the catalog restored from the checkpoint unless one is given.
        Called on a base class, it builds the checkpoint's own (already imported) subclass:
        Lightning would build ``cls`` and drop the subclass's extra arguments."""
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if "catalog" not in kwargs:
            kwargs["catalog"] = ItemCatalog.from_state(state["attnrec_catalog"])
        saved = _imported_class(state.get("hyper_parameters", {}).get("_class_path"))
        if saved is not None and saved is not cls and issubclass(saved, cls):
            return saved.load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    # -------------------------------------------------------------- encoding
    def encode_users(self, batch: Batch, all_positions: bool = False, need_weights: bool = False) -> UserEncoding:
        return self.user_encoder(batch, self.item_encoder, all_positions=all_positions, need_weights=need_weights)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        return self.scorer(users, items)

    # -------------------------------------------------------------- training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        all_positions = self.user_encoder.all_positions
        users = self.encode_users(batch, all_positions=all_positions).vectors
        target = batch["target"] if all_positions else batch["target"][:, -1]
        valid = target != 0
        users, target = users[valid], target[valid]
        negatives = batch.get("negatives")
        if negatives is not None:
            negatives = negatives if all_positions else negatives[:, -1]
            negatives = negatives[valid]
        loss = self._loss(users, target, negatives, batch, valid)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(valid.sum()))
        return loss

    def _loss(self, users: Tensor, target: Tensor, negatives: Tensor | None, batch: Batch, valid: Tensor) -> Tensor:
        if self.loss_name == "ce":
            logits = self.score(users, self.item_encoder.all_items())
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, target)
        if negatives is None:
            raise ValueError(
                f"loss={self.loss_name!r} needs sampled negatives in the batch; set the data module's "
                "num_negatives to at least 1 (or use loss='ce')"
            )
        pos = self.score(users, self.item_encoder(target).unsqueeze(-2)).squeeze(-1)  # [M]
        neg = self.score(users, self.item_encoder(negatives))  # [M, K]
        if self.loss_name == "sampled_softmax":
            if "negatives_logq" in batch:
                logq = batch["negatives_logq"]
                logq = (logq if self.user_encoder.all_positions else logq[:, -1])[valid]
                neg = neg - logq
                tlogq = batch["target_logq"]
                pos = pos - (tlogq if self.user_encoder.all_positions else tlogq[:, -1])[valid]
            neg = neg.masked_fill(negatives == target.unsqueeze(-1), float("-inf"))  # accidental hits
            logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)
            return F.cross_entropy(logits, torch.zeros_like(target))
        if self.loss_name == "bce":
            return F.softplus(-pos).mean() + F.softplus(neg).mean(dim=-1).mean()
        if self.loss_name == "bpr":
            return F.softplus(-(pos.unsqueeze(-1) - neg)).mean()
        raise ValueError(f"unknown loss {self.loss_name!r}; choose ce, sampled_softmax, bce or bpr")

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        warmup = self.hparams.warmup_steps
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        cosine = self.hparams.schedule == "cosine" and math.isfinite(total)

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
            self.evaluator = self._evaluator(datamodule)
            self.protocol = dict(datamodule.protocol) | {"loss": self.loss_name}

    def _evaluator(self, datamodule: RecDataModule | None) -> RankingEvaluator:
        return RankingEvaluator(
            self.metric_objects,
            self.ks,
            self.catalog.num_items,
            num_users=datamodule.num_users if datamodule is not None else None,
            popularity=self.catalog.popularity,
        )

    def scoring(self, batch: Batch) -> Scoring:
        """How this model scores items for a batch's users. Target-aware models (DIN, BST),
        whose user representation depends on the item, override this."""
        return VectorScoring(self.encode_users(batch).vectors, self.item_encoder.all_items(), self.scorer)

    def rank(self, batch: Batch) -> Ranking:
        """Rank the batch's candidates, or the whole catalogue with seen items masked."""
        scoring = self.scoring(batch)
        k = max(self.ks)
        if "candidates" in batch:
            return rank_candidates(scoring.items(batch["candidates"]), batch["candidates"], batch["labels"], k)
        return rank_full(
            scoring, self.catalog.num_items + 1, batch["targets"], batch.get("seen"), k, self.hparams.item_chunk_size
        )

    def _eval_step(self, batch: Batch) -> None:
        self.evaluator.update(self.rank(batch), batch.get("user"))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def _log_evaluation(self, stage: str) -> dict[str, float]:
        results = {name: float(value) for name, value in self.evaluator.compute().items()}
        self.evaluator.reset()
        self.log_dict({f"{stage}/{name}": value for name, value in results.items()}, sync_dist=False)
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
        table.add_column("value", justify="right")
        for name, value in results.items():
            table.add_row(name, f"{value:.4f}")
        console = Console()
        console.print(table)
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
        top = rank_full(scoring, self.catalog.num_items + 1, no_targets, seen, k, self.hparams.item_chunk_size).topk
        return top, scoring.items(top).masked_fill(top == 0, float("-inf"))

    @torch.no_grad()
    def attention_weights(self, batch: Batch) -> dict[str, Tensor]:
        """The user encoder's attention weights for a batch, by layer name."""
        return self.encode_users(batch, need_weights=True).weights or {}

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        items, scores = self.recommend(batch, k=max(self.ks))
        return {"user": batch["user"], "items": items, "scores": scores}


def to_spec(value: Any) -> Any:
    """A factory (class or ``functools.partial`` of one, as jsonargparse builds them) as a
    ``{"class_path", "init_args"}`` spec; other values unchanged."""
    if isinstance(value, type):
        return {"class_path": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, functools.partial):
        target = next((x for x in (value.func, *value.args) if isinstance(x, type)), None)
        if target is not None:
            spec = to_spec(target)
            if value.keywords:
                spec["init_args"] = {k: to_spec(v) for k, v in value.keywords.items()}
            return spec
    if isinstance(value, (list, tuple)):
        return type(value)(to_spec(v) for v in value)
    return value


def _imported_class(path: Any) -> type | None:
    """The class at ``module.Name`` if its module is already imported (never imports: a
    checkpoint must not choose code to run)."""
    if not isinstance(path, str) or "." not in path:
        return None
    module, name = path.rsplit(".", 1)
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None
