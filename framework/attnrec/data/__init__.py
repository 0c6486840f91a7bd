"""Interaction tables, id maps, splits, samplers and the data modules."""

from .datamodule import InteractionDataModule, Loaded
from .interactions import IdMap, Split, k_core, split
from .sequences import Collate, EvalLists, NegativeSampler, TrainWindows
from .synthetic import SyntheticDataModule, generate
from .tables import DataFormatError, read_table

__all__ = [
    "Collate", "DataFormatError", "EvalLists", "IdMap", "InteractionDataModule", "Loaded", "NegativeSampler",
    "Split", "SyntheticDataModule", "TrainWindows", "generate", "k_core", "read_table", "split",
]  # fmt: skip
