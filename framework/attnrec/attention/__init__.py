"""Generic attention blocks, registered as the built-in ``attentions``."""

from .additive import AdditiveAttention
from .multihead import MultiHeadAttention, attendable
from .target import TargetAttention

__all__ = ["AdditiveAttention", "MultiHeadAttention", "TargetAttention", "attendable"]
