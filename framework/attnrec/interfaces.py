"""The abstract interfaces that plugins implement.

Conventions kept everywhere: item id 0 is padding; batches are ``dict[str, Tensor]``;
histories are left-padded ``[B, L]``; attention masks are boolean, broadcastable to
``[B, H, Lq, Lk]``, True meaning *may attend* (as in ``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import lightning as L
import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]


# --------------------------------------------------------------------------- data
class ItemCatalog:
    """Per-item facts indexed by internal item id (row 0 is the padding item).

    ``features`` holds tensors whose first dimension is ``num_items + 1`` (``category [N+1]``,
    ``title_tokens [N+1, T]``, ``visual [N+1, Dv]`` ...); ``popularity`` counts training
    interactions; ``raw_ids``/``titles`` map back to what a person recognises; ``num_users`` and
    ``train_edges [2, E]`` (internal user id, item id of every training interaction) serve
    models with per-user parameters or graph propagation. The model keeps
    the catalog it was built with (in its checkpoint), so item encoders can read features and
    a checkpoint can name its items without the data.
    """

    def __init__(
        self,
        num_items: int,
        popularity: Tensor | None = None,
        raw_ids: list[Any] | None = None,
        titles: list[str] | None = None,
        features: dict[str, Tensor] | None = None,
        num_users: int = 0,
        train_edges: Tensor | None = None,
    ) -> None:
        rows = num_items + 1
        self.num_items = num_items
        self.num_users = num_users
        self.train_edges = train_edges
        self.popularity = popularity if popularity is not None else torch.zeros(rows)
        self.raw_ids = raw_ids if raw_ids is not None else list(range(rows))
        self.titles = titles
        self.features = features or {}
        if self.popularity.shape != (rows,):
            raise ValueError(f"ItemCatalog.popularity must have shape [{rows}], got {tuple(self.popularity.shape)}")
        if len(self.raw_ids) != rows:
            raise ValueError(f"ItemCatalog.raw_ids must have num_items + 1 = {rows} entries (entry 0 is padding)")
        for name, value in self.features.items():
            if value.shape[0] != rows:
                raise ValueError(
                    f"ItemCatalog feature {name!r} has {value.shape[0]} rows; expected num_items + 1 = {rows} "
                    "(row 0 is the padding item)"
                )

    def __repr__(self) -> str:
        return f"ItemCatalog(num_items={self.num_items}, num_users={self.num_users}, features={sorted(self.features)})"

    def state(self) -> dict[str, Any]:
        """Plain containers only, so checkpoints stay loadable with ``weights_only=True``."""
        return {
            "num_items": self.num_items,
            "popularity": self.popularity,
            "raw_ids": [x if isinstance(x, (int, float, str)) or x is None else str(x) for x in self.raw_ids],
            "titles": self.titles,
            "features": dict(self.features),
            "num_users": self.num_users,
            "train_edges": self.train_edges,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ItemCatalog:
        return cls(**state)

    def cardinality(self, feature: str) -> int:
        """Number of codes of an integer feature, padding code 0 included (an embedding's size)."""
        return int(self.features[feature].max()) + 1

    def title(self, item: int) -> str:
        if self.titles is not None and self.titles[item]:
            return self.titles[item]
        return str(self.raw_ids[item])


class RecDataModule(L.LightningDataModule, ABC):
    """A data set: interactions, id maps, a split, loaders and the item catalog.

    ``num_items`` and ``num_users`` must be answerable right after construction (the CLI links
    them into the model before ``setup``). Training batches carry ``history [B, L]`` and
    ``target [B, L]`` (0 where there is no target); evaluation batches carry ``user [B]``,
    ``history [B, L]``, ``targets [B, T]`` (0-padded) and ``seen [B, S]`` (items masked in full
    ranking), or ``candidates [B, C]`` + ``labels [B, C]`` when ranking a given list.
    """

    @property
    @abstractmethod
    def num_items(self) -> int: ...

    @property
    @abstractmethod
    def num_users(self) -> int: ...

    @property
    @abstractmethod
    def catalog(self) -> ItemCatalog: ...

    @property
    @abstractmethod
    def protocol(self) -> dict[str, str]:
        """The evaluation protocol tuple (split, candidates, max_len, filtering ...), printed with results."""

    @abstractmethod
    def user_history(self, user: Any) -> Tensor:
        """Internal item ids a raw user id interacted with, oldest first (for ``recommend``)."""


# ---------------------------------------------------------------------- attention
class AttentionOutput(NamedTuple):
    values: Tensor  # [B, Lq, D]
    weights: Tensor | None  # [B, H, Lq, Lk]


class Attention(nn.Module, ABC):
    """Attention of queries over keys/values. Constructed as ``cls(dim, ...)``.

    Implementations must never leave a query row with nothing to attend to (fully masked rows
    give NaN in fused kernels): such a row returns zeros and zero weights.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @abstractmethod
    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> AttentionOutput: ...


# ----------------------------------------------------------------------- encoders
class ItemEncoder(nn.Module, ABC):
    """Item ids ``[...]`` -> vectors ``[..., dim]``. Constructed as ``cls(catalog, dim, ...)``,
    so an encoder can size its tables from the catalog and read item features from it."""

    required_features: ClassVar[tuple[str, ...]] = ()
    """Catalog features the encoder reads (``"train_edges"`` for the training graph), so tools
    and conformance tests can tell which catalogs it can be built from."""

    def __init__(self, catalog: ItemCatalog, dim: int) -> None:
        super().__init__()
        self.num_items = catalog.num_items
        self.dim = dim

    @abstractmethod
    def forward(self, items: Tensor) -> Tensor: ...

    def all_items(self) -> Tensor:
        """Vectors of every item, ``[num_items + 1, dim]`` (row 0 is padding)."""
        return self(torch.arange(self.num_items + 1, device=self._device()))

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")


class UserEncoding(NamedTuple):
    vectors: Tensor  # [B, D], or [B, L, D] for all-position training
    weights: dict[str, Tensor] | None  # attention weights by layer name, when asked for


class UserEncoder(nn.Module, ABC):
    """A batch (history of item ids) + an item encoder -> user vectors. Constructed as
    ``cls(dim, ...)``.

    Set ``all_positions = True`` on encoders that return one vector per history position
    (causal sequence models): the model then trains on every position at once.
    """

    all_positions: ClassVar[bool] = False
    required_keys: ClassVar[tuple[str, ...]] = ("history",)
    """Batch keys the encoder reads; target-aware encoders (DIN, BST) also need the candidates."""
    item_encoders: ClassVar[tuple[str, ...]] = ()
    """Names of the item encoders it works with, when it reads more than item vectors from
    them (graph user encoders read propagated user vectors); empty means any."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @abstractmethod
    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding: ...


# ------------------------------------------------------------------------ scorers
class Scorer(nn.Module, ABC):
    """Relevance of items to users. Constructed as ``cls(dim, ...)`` (``dim`` may be unused).

    ``users [..., D]`` with shared ``items [N, D]`` -> ``[..., N]``; with per-row
    ``items [..., C, D]`` -> ``[..., C]``.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    @abstractmethod
    def forward(self, users: Tensor, items: Tensor) -> Tensor: ...


# ------------------------------------------------------------------------ metrics
class RankingMetric(ABC):
    """A metric of one ranked list, averaged over lists by the evaluator (exact under DDP).

    ``ranks [B, T]``: 1-based, tie-pessimistic ranks of the relevant items among the valid
    candidates (``inf`` pads lists with fewer than T relevant items); ``num_relevant [B]``;
    ``num_candidates [B]``: valid (unmasked) candidates per list.
    """

    uses_k: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor: ...
