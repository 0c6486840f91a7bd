"""SocialRecommender: LightGCN with attention over a listener's artists and friends, trained and
evaluated by the core, with a cold-user slice in evaluation and explanations by friend and by
artist."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Sequence

import torch
from attnrec.interfaces import Batch, ItemCatalog
from attnrec.losses import BPRLoss
from attnrec.model import ItemEncoderFactory, LossFactory, UserEncoderFactory
from torch import Tensor

from attnrec_graph.encoders import GraphUserEncoder
from attnrec_graph.model import GraphRecommender, Neighbour

from .encoders import SocialAttentionEncoder
from .social import degrees

SOCIAL_KEY = "item_encoder.social_index"


class Friend(NamedTuple):
    id: int  # internal user id
    name: str  # raw user id
    attention: float  # social attention on this friend, mean over heads (sums to 1 over friends)
    contribution: float | None  # this friend's exact share of the explained item's score


class SocialRecommender(GraphRecommender):
    """LightGCN propagation plus attention over a listener's artists and friends, fused linearly
    (:class:`SocialAttentionEncoder`), scored by a dot product, trained with a core loss
    (``BPRLoss`` by default; listen counts weigh each positive through the data's
    ``target_weight``) plus LightGCN's L2 ``reg``.

    Evaluation adds a **cold-user slice**: the same metrics over users with at most
    ``cold_max_interactions`` training interactions and at least one friend, logged as
    ``cold/<metric>`` with ``cold/lists`` (how many lists it averages), through the core's
    :meth:`~attnrec.Recommender.evaluation_slices`. Explanations:
    :meth:`explain_friends` (which friends, with attention and exact score shares) and
    :meth:`explain` (which listened artists, the graph plugin's). Other arguments are
    :class:`~attnrec_graph.model.GraphRecommender`'s and :class:`~attnrec.Recommender`'s.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        item_encoder: ItemEncoderFactory = SocialAttentionEncoder,
        user_encoder: UserEncoderFactory = GraphUserEncoder,
        loss: LossFactory | str = BPRLoss,
        reg: float = 1e-4,
        cold_max_interactions: int = 5,
        schedule: Literal["cosine", "constant"] = "constant",
        metrics: Sequence[str] = ("Recall", "NDCG", "HR", "MRR"),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, item_encoder=item_encoder, user_encoder=user_encoder, loss=loss, reg=reg, schedule=schedule,
            metrics=metrics, **kwargs,
        )  # fmt: skip
        if not isinstance(self.item_encoder, SocialAttentionEncoder):
            raise TypeError(f"SocialRecommender needs a SocialAttentionEncoder, got {type(self.item_encoder).__name__}")
        self.cold_max_interactions = cold_max_interactions
        self.user_names: list[Any] | None = getattr(catalog, "user_ids", None)

    @property
    def social(self) -> SocialAttentionEncoder:
        assert isinstance(self.item_encoder, SocialAttentionEncoder)
        return self.item_encoder

    # ----------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Give the encoder the checkpoint's social network before the core compares shapes
        (a model rebuilt from the catalog alone starts with none), and take the users' raw ids
        from the checkpoint's serving data to name friends."""
        saved = checkpoint.get("state_dict", {}).get(SOCIAL_KEY)
        if saved is not None:
            self.social.set_social_graph(saved)
        serving = checkpoint.get("attnrec_serving") or {}
        if self.user_names is None and serving.get("user_ids") is not None:
            self.user_names = list(serving["user_ids"])
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------ evaluation
    def cold_users(self) -> Tensor:
        """``[U + 1]`` bool: users with at most ``cold_max_interactions`` training interactions
        and at least one friend."""
        num_users = self.catalog.num_users
        edges = self.catalog.train_edges
        counts = torch.bincount(edges[0].long(), minlength=num_users + 1) if edges is not None else torch.zeros(num_users + 1)
        has_friends = degrees(self.social.social_index.cpu(), num_users) > 0
        return (counts <= self.cold_max_interactions) & has_friends

    def evaluation_slices(self, batch: Batch) -> dict[str, Tensor]:
        return super().evaluation_slices(batch) | {"cold": self.cold_users().to(batch["user"].device)[batch["user"]]}

    # --------------------------------------------------------- explanations
    @torch.no_grad()
    def explain_friends(self, user: int, item: int | None = None, k: int | None = None) -> list[Friend]:
        """Which friends drove ``item``'s recommendation to ``user`` (internal ids): every friend
        (or the top ``k``) with their social attention, which sums to one over all of them, and
        given an item their exact share of its score, ordered by that share (else by attention).
        A friendless user gets an empty list."""
        if not 1 <= user <= self.catalog.num_users:
            raise ValueError(f"explain_friends: user must be an internal id in 1..{self.catalog.num_users}, got {user}")
        was_training = self.training
        self.eval()
        try:
            found = self.social.friend_attention(user, item)
        finally:
            self.train(was_training)
        order = (found.contributions if found.contributions is not None else found.weights).argsort(descending=True)
        out = []
        for i in order[:k].tolist():
            friend = int(found.friends[i])
            share = float(found.contributions[i]) if found.contributions is not None else None
            out.append(Friend(friend, self.user_name(friend), float(found.weights[i]), share))
        return out

    def explain_artists(self, user: int, item: int, k: int = 5) -> list[Neighbour]:
        """Which of ``user``'s training artists drove ``item``'s score: the graph plugin's
        :meth:`~attnrec_graph.model.GraphRecommender.explain` over the item-space attention."""
        return self.explain(user, item, k)

    def user_name(self, user: int) -> str:
        """A user's raw id (from the data's catalog or the checkpoint), else ``user <id>``."""
        if self.user_names is not None and user < len(self.user_names):
            return str(self.user_names[user])
        return f"user {user}"
