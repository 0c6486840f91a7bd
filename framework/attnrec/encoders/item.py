from __future__ import annotations

from torch import Tensor, nn

from ..interfaces import ItemCatalog, ItemEncoder


class IdItemEncoder(ItemEncoder):
    """One learned vector per item id (row 0, padding, stays zero)."""

    inference_cache = False  # all_items() is the weight table itself: nothing to compute

    def __init__(self, catalog: ItemCatalog, dim: int, dropout: float = 0.0, init_std: float = 0.02) -> None:
        super().__init__(catalog, dim)
        self.embedding = nn.Embedding(catalog.num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.embedding.weight.data[0].zero_()
        self.dropout = nn.Dropout(dropout)

    def forward(self, items: Tensor) -> Tensor:
        return self.dropout(self.embedding(items))

    def all_items(self) -> Tensor:
        return self.embedding.weight
