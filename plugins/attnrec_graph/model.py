"""GraphRecommender: a Recommender whose item encoder propagates over the training graph."""

from __future__ import annotations

import inspect
from typing import Any, Literal, NamedTuple, Sequence

import torch
from attnrec.interfaces import Batch, ItemCatalog
from attnrec.losses import BPRLoss
from attnrec.model import Examples, ItemEncoderFactory, LossFactory, Recommender, UserEncoderFactory
from torch import Tensor

from .encoders import EdgeAttention, GraphEncoder, GraphUserEncoder, LightGCNEncoder


class Neighbour(NamedTuple):
    kind: str  # "user", "item" or "entity"
    id: int  # internal id
    name: str
    attention: float  # mean over layers and heads
    contribution: float | None  # attention x <neighbour, recommended item>, for explain()


class GraphRecommender(Recommender):
    """Graph collaborative filtering: per-user and per-item embeddings propagated over the
    training interaction graph by the item encoder (``LightGCNEncoder``,
    ``GraphAttentionEncoder`` or ``KGAttentionEncoder``), scored by a dot product.

    Propagation runs once per training step and once per evaluation pass (the encoder keeps
    it for the user side; the core's inference cache holds the item vectors). ``reg`` is
    LightGCN's L2 penalty on the layer-0 embeddings of each batch's users, positives and
    negatives (``reg / 2 * ||.||^2`` averaged over the batch), added through
    :meth:`regularization` to any core loss (``BPRLoss`` by default; ``SampledSoftmaxLoss``,
    ``BCELoss`` and ``GBCELoss`` work too; ``CrossEntropyLoss`` scores the whole catalogue per
    step). Sampled losses need ``num_negatives >= 1`` in the data. Evaluation ranks all items
    with the user's training items masked (the core's ``seen``). Other arguments are
    :class:`~attnrec.Recommender`'s.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        item_encoder: ItemEncoderFactory = LightGCNEncoder,
        user_encoder: UserEncoderFactory = GraphUserEncoder,
        loss: LossFactory | str = BPRLoss,
        reg: float = 1e-4,
        schedule: Literal["cosine", "constant"] = "constant",
        metrics: Sequence[str] = ("Recall", "NDCG", "HR", "MRR"),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, item_encoder=item_encoder, user_encoder=user_encoder, loss=loss, schedule=schedule,
            metrics=metrics, **kwargs,
        )  # fmt: skip
        if not isinstance(self.item_encoder, GraphEncoder):
            raise TypeError(
                f"GraphRecommender needs a graph item encoder (LightGCNEncoder, GraphAttentionEncoder, "
                f"KGAttentionEncoder or another GraphEncoder), got {type(self.item_encoder).__name__}"
            )
        self.reg = reg

    @property
    def graph(self) -> GraphEncoder:
        assert isinstance(self.item_encoder, GraphEncoder)
        return self.item_encoder

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Spell out the encoder's defaults in its spec: when the checkpoint is loaded, a spec
        without all ``init_args`` would inherit those of this class's default encoder (LightGCN's
        ``num_layers=3``), not the defaults of the encoder that was trained."""
        super().on_save_checkpoint(checkpoint)
        spec = checkpoint["hyper_parameters"].get("item_encoder")
        if isinstance(spec, dict):
            defaults = {
                name: p.default
                for name, p in list(inspect.signature(type(self.graph)).parameters.items())[2:]
                if p.default is not inspect.Parameter.empty
            }
            spec["init_args"] = defaults | spec.get("init_args", {})

    # -------------------------------------------------------------- training
    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.graph.clear()  # one fresh propagation per step, shared by users, positives and negatives

    def regularization(self, batch: Batch, examples: Examples) -> Tensor | float:
        if self.reg <= 0:
            return 0.0
        items = examples.positive.unsqueeze(-1)
        if examples.negatives is not None:
            items = torch.cat([items, examples.negatives], dim=-1)
        ego_users, ego_items = self.graph.ego(batch["user"][examples.rows], items)
        penalty = ego_users.pow(2).sum(-1) + ego_items.pow(2).sum(-1).reshape(len(examples.rows), -1).sum(-1)
        return self.reg * 0.5 * penalty.mean()

    # ------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self.graph.clear()

    def on_test_epoch_start(self) -> None:
        self.graph.clear()

    # --------------------------------------------------------- explanations
    @torch.no_grad()
    def edge_attention(self) -> EdgeAttention:
        """Per-edge attention ``weights [layers, E, heads]`` over ``edge_index [2, E]`` (node ids,
        source -> target; see ``self.graph.layout``). For LightGCN, the fixed normalisation."""
        return self.graph.edge_attention()

    @torch.no_grad()
    def neighbours(self, kind: Literal["user", "item"], id: int, k: int = 5) -> list[Neighbour]:
        """The ``k`` neighbours with the highest attention on user or item ``id``."""
        return self._neighbours(kind, id, k, None)

    @torch.no_grad()
    def explain(self, user: int, item: int, k: int = 5) -> list[Neighbour]:
        """Why ``item`` is recommended to ``user`` (internal ids): the user's graph neighbours
        (training items) ordered by contribution, attention x the dot product of the
        neighbour's vector with the recommended item's (how much that attended neighbour pulls
        the score up)."""
        return self._neighbours("user", user, k, item)

    def _neighbours(self, kind: str, id: int, k: int, item: int | None) -> list[Neighbour]:
        layout = self.graph.layout
        limit = layout.num_users if kind == "user" else layout.num_items
        if kind not in ("user", "item") or not 1 <= id <= limit:
            raise ValueError(f"neighbours of {kind} {id}: kind must be 'user' or 'item' and id in 1..{limit}")
        was_training = self.training
        self.eval()
        try:
            edge_index, weights = self.edge_attention()
            node = id if kind == "user" else id + layout.item_offset
            incoming = (edge_index[1] == node).nonzero().flatten()
            sources = edge_index[0, incoming]
            attention = weights[:, incoming].mean(dim=(0, 2))
            contribution = None
            if item is not None:  # a user's neighbours are items
                items = self.graph.all_items()
                contribution = attention * (items[sources - layout.item_offset] @ items[item])
            order = (contribution if contribution is not None else attention).argsort(descending=True)[:k]
        finally:
            self.train(was_training)
        out = []
        for i in order.tolist():
            source_kind, source_id = layout.describe(int(sources[i]))
            out.append(
                Neighbour(
                    source_kind, source_id, self._name(source_kind, source_id), float(attention[i]),
                    float(contribution[i]) if contribution is not None else None,
                )
            )  # fmt: skip
        return out

    def _name(self, kind: str, id: int) -> str:
        if kind == "item":
            return self.catalog.title(id)
        return f"{kind} {id}"
