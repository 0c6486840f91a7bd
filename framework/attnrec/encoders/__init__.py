"""Generic encoders, registered as the built-in ``encoders``."""

from .item import IdItemEncoder
from .pooling import PoolingUserEncoder
from .transformer import AttentionFactory, TransformerUserEncoder

__all__ = ["AttentionFactory", "IdItemEncoder", "PoolingUserEncoder", "TransformerUserEncoder"]
