"""Generic attention blocks, registered as the built-in ``attentions``."""

from ..interfaces import attendable_rows, masked_softmax
from .additive import AdditiveAttention
from .multihead import MultiHeadAttention
from .target import TargetAttention

__all__ = ["AdditiveAttention", "MultiHeadAttention", "TargetAttention", "attendable_rows", "masked_softmax"]
