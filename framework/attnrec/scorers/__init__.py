"""Generic scorers, registered as the built-in ``scorers``."""

from .scorers import BilinearScorer, CosineScorer, DotScorer, MLPScorer

__all__ = ["BilinearScorer", "CosineScorer", "DotScorer", "MLPScorer"]
