"""attnrec: attention-based recommenders on PyTorch Lightning, extended through plugins."""

from .hookspecs import hookimpl
from .interfaces import (
    Attention,
    AttentionOutput,
    Batch,
    ItemCatalog,
    ItemEncoder,
    Loss,
    RankingMetric,
    RecDataModule,
    Scorer,
    UserEncoder,
    UserEncoding,
)
from .model import Recommender
from .plugins import get_component, get_registry, load_plugins
from .privacy import DifferentialPrivacy  # imported so the CLI resolves --trainer.callbacks+=DifferentialPrivacy; opacus loads only when it trains

__version__ = "0.1.0"

__all__ = [
    "Attention", "AttentionOutput", "Batch", "DifferentialPrivacy", "ItemCatalog", "ItemEncoder", "Loss", "RankingMetric", "RecDataModule",
    "Recommender", "Scorer", "UserEncoder", "UserEncoding", "get_component", "get_registry", "hookimpl",
    "load_plugins", "__version__",
]  # fmt: skip
