"""The abstract interfaces that plugins implement.

Conventions kept everywhere: item id 0 is padding; batches are ``dict[str, Tensor]``;
histories are left-padded ``[B, L]``; attention masks are boolean, broadcastable to
``[B, H, Lq, Lk]``, True meaning *may attend* (as in ``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, NamedTuple, Sequence

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

    ``catalog`` (hence ``num_items`` and ``num_users``, read from it unless overridden) must be
    answerable right after construction: the CLI links it into the model before ``setup``.
    Training batches carry ``history [B, L]`` and ``target [B, L]`` (0 where there is no
    target), optionally ``negatives [B, L, K]`` and ``target_weight [B, L]``; evaluation
    batches carry ``user [B]``, ``history [B, L]``, ``targets [B, T]`` (0-padded) and
    ``seen [B, S]`` (items masked in full ranking), or ``candidates [B, C]`` + ``labels [B, C]``
    when ranking a given list.
    """

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    @property
    def num_users(self) -> int:
        return self.catalog.num_users

    @property
    @abstractmethod
    def catalog(self) -> ItemCatalog: ...

    @property
    @abstractmethod
    def protocol(self) -> dict[str, str]:
        """The evaluation protocol tuple (split, candidates, max_len, filtering ...), printed with results."""

    max_len: int | None = None
    """The longest history a batch carries (None: no limit). The CLI links it into the model's
    ``max_len``, so it is set once, on the data."""

    @abstractmethod
    def user_history(self, user: Any) -> Tensor:
        """Internal item ids a raw user id interacted with, oldest first (for ``recommend``)."""

    def user_batch(self, users: Sequence[Any]) -> Batch:
        """A batch that asks for next-item recommendations for raw user ids: ``history [B, L]``
        (left-padded, the latest ``max_len`` items), ``seen [B, S]`` (everything to exclude)
        and ``user [B]`` (internal ids, for models with per-user parameters). An unknown user
        raises ``KeyError`` naming the data set. ``recommend`` and serving build batches only
        through this."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement user_batch(users); implement it (see "
            "SequenceDataModule.user_batch) to serve recommendations from this data module"
        )


# ---------------------------------------------------------------------- attention
class AttentionOutput(NamedTuple):
    values: Tensor  # [B, Lq, D]
    weights: Tensor | None  # [B, H, Lq, Lk]


def attendable_rows(mask: Tensor | None, shape: Sequence[int]) -> tuple[Tensor | None, Tensor | None]:
    """The mask expanded to ``shape`` with fully masked query rows opened up (so a fused kernel
    never sees one and returns NaN), and a ``[B, H, Lq, 1]`` flag of the rows that have
    something to attend to; ``(None, None)`` without a mask. Branch-free, so ``torch.compile``
    and ``torch.export`` trace it: callers multiply their outputs by the flag."""
    if mask is None:
        return None, None
    mask = mask.to(torch.bool).expand(*shape)
    some = mask.any(dim=-1, keepdim=True)
    return mask | ~some, some


def masked_softmax(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dimension where ``mask`` is True; rows with nothing to attend to
    get zero weights (never NaN)."""
    opened, some = attendable_rows(mask, logits.shape)
    if opened is None:
        return logits.softmax(dim=-1)
    weights = logits.masked_fill(~opened, float("-inf")).softmax(dim=-1)
    return weights * some


class Attention(nn.Module, ABC):
    """Attention of queries over keys/values. Constructed as ``cls(dim, ...)``.

    The base owns the contract: a subclass computes raw ``logits(query, key) -> [B, H, Lq, Lk]``
    and the base masks (boolean, broadcastable to ``[B, H, Lq, Lk]``, True = may attend),
    normalises (:meth:`normalize`, a masked softmax by default), applies the values
    (:meth:`values` per head, then :meth:`output` back to ``[B, Lq, D]``) and zeroes every query
    row with nothing to attend to: zeros out, zero weights, never NaN. None of it branches on
    data, so encoders built on it trace with ``torch.compile`` and export with
    ``torch.export``. Subclasses with a fused kernel (``MultiHeadAttention`` on
    ``F.scaled_dot_product_attention``) may override :meth:`forward` and must keep the contract;
    :func:`attnrec.testing.check_attention` checks it.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @abstractmethod
    def logits(self, query: Tensor, key: Tensor) -> Tensor:
        """Raw attention scores ``[B, H, Lq, Lk]`` of ``query [B, Lq, D]`` over ``key [B, Lk, D]``."""

    def normalize(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        """Attention weights from logits; masked keys and empty rows must get weight 0."""
        return masked_softmax(logits, mask)

    def values(self, value: Tensor) -> Tensor:
        """``[B, Lk, D]`` -> per-head values ``[B, H, Lk, Dh]`` (default: shared by all heads)."""
        return value.unsqueeze(1)

    def output(self, attended: Tensor) -> Tensor:
        """Per-head results ``[B, H, Lq, Dh]`` -> ``[B, Lq, D]`` (default: the mean over heads)."""
        return attended.mean(dim=1)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> AttentionOutput:
        weights = self.normalize(self.logits(query, key), mask)
        out = self.output(weights @ self.values(value))
        if mask is not None:  # a row no head may attend from is zero, whatever output() adds
            out = out * mask.to(torch.bool).expand(weights.shape).any(dim=-1).any(dim=1).unsqueeze(-1)
        return AttentionOutput(out, weights if need_weights else None)


# ----------------------------------------------------------------------- encoders
class ItemEncoder(nn.Module, ABC):
    """Item ids ``[...]`` -> vectors ``[..., dim]``. Constructed as ``cls(catalog, dim, ...)``,
    so an encoder can size its tables from the catalog and read item features from it.

    **Inference cache.** In inference (eval mode, gradients off: validation, test, prediction,
    serving) the core computes :meth:`all_items` once and answers every lookup from that table
    (the user encoder's history lookups, the candidates' and the whole catalogue's scores), so
    an encoder that computes (text, images, features, graph propagation) costs one catalogue
    pass per evaluation, not one per batch, and needs no cache of its own. The table is kept
    while every parameter and buffer of the encoder keeps its storage and version and autocast
    its state: optimiser steps, ``load_state_dict`` and moves to another device invalidate it;
    call :meth:`clear_vectors` after changing anything else the vectors depend on. ``forward`` and
    ``all_items`` must agree (``attnrec.testing`` checks it), and ``all_items`` must not call
    the encoder through the cache's own lookup (``self(...)`` is fine: it is bypassed then).
    """

    required_features: ClassVar[tuple[str, ...]] = ()
    """Catalog features the encoder reads (``"train_edges"`` for the training graph), so tools
    and conformance tests can tell which catalogs it can be built from."""

    inference_cache: ClassVar[bool] = True
    """Whether inference keeps :meth:`vectors` between calls. An encoder whose ``all_items()``
    is its own weight table (``IdItemEncoder``) has nothing to save and sets False."""

    def __init__(self, catalog: ItemCatalog, dim: int) -> None:
        super().__init__()
        self.num_items = catalog.num_items
        self.dim = dim
        self._vectors: tuple[tuple, Tensor] | None = None
        self._filling = False

    @abstractmethod
    def forward(self, items: Tensor) -> Tensor: ...

    def __call__(self, items: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not args and not kwargs and self.inference_cache and not self._filling and self._inference():
            return self.vectors()[items]
        return super().__call__(items, *args, **kwargs)

    def all_items(self) -> Tensor:
        """Vectors of every item, ``[num_items + 1, dim]`` (row 0 is padding), computed afresh;
        scoring reads them through :meth:`vectors`."""
        return nn.Module.__call__(self, torch.arange(self.num_items + 1, device=self._device()))

    def vectors(self) -> Tensor:
        """Every item's vector ``[num_items + 1, dim]`` as the model scores with them:
        :meth:`all_items`, kept between calls in inference (see the class docstring)."""
        key = self._state() if self.inference_cache and self._inference() else None
        if key is None:
            return self.all_items()
        if self._vectors is None or self._vectors[0] != key:
            self._vectors = None  # free the stale table before computing the new one
            self._filling = True
            try:
                self._vectors = (key, self.all_items())
            finally:
                self._filling = False
        return self._vectors[1]

    def clear_vectors(self) -> None:
        """Forget the inference table (after changing what the vectors depend on other than
        this encoder's parameters and buffers)."""
        self._vectors = None

    def train(self, mode: bool = True) -> ItemEncoder:
        if mode:
            self._vectors = None  # training recomputes every step: free the memory
        return super().train(mode)

    def __getstate__(self) -> dict[str, Any]:
        return super().__getstate__() | {"_vectors": None}  # copies and pickles compute their own table

    def _inference(self) -> bool:
        return not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def _state(self) -> tuple | None:
        """What the table depends on: the storage and in-place version of every parameter and
        dense buffer (sparse buffers, such as a graph's adjacency, are rebuilt, not updated) and
        the autocast state, which sets the table's dtype. None, so no caching, when a tensor was
        made in inference mode: such a tensor keeps no version, and may change in place inside it."""
        tensors = (*self.parameters(), *(b for b in self.buffers() if b.layout == torch.strided))
        if any(t.is_inference() for t in tensors):
            return None
        device = self._device().type
        autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
        return (autocast, *((t.data_ptr(), t._version) for t in tensors))

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


# ------------------------------------------------------------------------- losses
class Loss(nn.Module, ABC):
    """A training objective over candidate logits. Constructed as ``cls()`` (every argument has
    a default), chosen by class name (``--model.loss=SampledSoftmaxLoss``).

    ``forward(logits [M, C], positive [M], mask [M, C] | None) -> [M]``: one loss per example,
    where ``positive`` is the column of the positive candidate and ``mask`` (True = a valid
    candidate) removes padding, excluded items and accidental hits of the positive. The model
    does the reduction (a weighted mean when the batch carries per-example weights) and adds
    regularisation.

    ``candidates`` says which logits the loss wants: ``"catalog"`` (every item, column = item id,
    the positive's column is its id) or ``"sampled"`` (the positive in column 0, then the
    batch's sampled ``negatives``; needs a data module with ``num_negatives >= 1``). With
    ``log_q_correction`` the model subtracts the sampler's log-probabilities from sampled
    logits before the loss sees them (sampled softmax's logQ correction).
    """

    candidates: ClassVar[Literal["catalog", "sampled"]] = "catalog"
    log_q_correction: ClassVar[bool] = False

    def bind(self, num_items: int) -> None:
        """Called by the model with the catalogue size before training (gBCE calibrates on it)."""

    @abstractmethod
    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor: ...

    def catalog_loss(self, users: Tensor, items: Tensor, positive: Tensor, allowed: Tensor) -> Tensor:
        """Optional, for ``"catalog"`` losses: ``forward`` of the logits ``users [M, D] @ items.T``
        (``items [N + 1, D]``, column = item id) with ``allowed [N + 1]`` as every row's mask,
        computed without making the ``[M, N + 1]`` logits (on a CPU their memory passes cost as
        much as the matmul; see :func:`attnrec.losses.catalog_cross_entropy`). The model calls
        it instead of ``forward`` when a loss class defines it, the scorer is a ``DotScorer`` and
        the default ``scoring``/``candidate_logits`` are used; a subclass that overrides
        ``forward`` but not this method gets ``forward``. It must give ``forward``'s values and
        gradients."""
        raise NotImplementedError


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
