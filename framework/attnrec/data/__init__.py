"""Interaction tables, id maps, splits, samplers, the data modules and public data-set loaders."""

from .amazon import AmazonReviewsDataModule
from .datamodule import InteractionDataModule, Loaded, SequenceDataModule
from .download import ChecksumError, DownloadError, cache_root, fetch
from .interactions import IdMap, Split, k_core, split
from .lines import UserSequencesDataModule, read_user_lines
from .movielens import MovieLensDataModule
from .sequences import Collate, EvalLists, NegativeSampler, TrainWindows
from .synthetic import SyntheticDataModule, generate
from .tables import DataFormatError, read_table, tsv_rows

__all__ = [
    "AmazonReviewsDataModule", "ChecksumError", "Collate", "DataFormatError", "DownloadError", "EvalLists", "IdMap",
    "InteractionDataModule", "Loaded", "MovieLensDataModule", "NegativeSampler", "SequenceDataModule", "Split",
    "SyntheticDataModule", "TrainWindows", "UserSequencesDataModule", "cache_root", "fetch", "generate", "k_core",
    "read_table", "read_user_lines", "split", "tsv_rows",
]  # fmt: skip
