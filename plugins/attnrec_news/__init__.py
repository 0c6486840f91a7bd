"""attnrec's news plugin: MIND-format data, NRMS, a pretrained-language-model news encoder and
MIND's official metrics (see docs/news.md)."""

from __future__ import annotations

from attnrec import hookimpl
from attnrec.hookspecs import Register

from .encoders import NewsEncoder, NRMSNewsEncoder, NRMSUserEncoder, PLMNewsEncoder
from .metrics import MINDMRR
from .mind import MINDDataModule, download_mind, parse_behaviors, parse_news
from .model import NRMS
from .sample import generate_mind, write_mind_sample

__all__ = [
    "MINDMRR", "MINDDataModule", "NRMS", "NRMSNewsEncoder", "NRMSUserEncoder", "NewsEncoder", "PLMNewsEncoder",
    "download_mind", "generate_mind", "parse_behaviors", "parse_news", "write_mind_sample",
]  # fmt: skip


@hookimpl
def register_data(register: Register) -> None:
    register(MINDDataModule)


@hookimpl
def register_encoders(register: Register) -> None:
    for cls in (NRMSNewsEncoder, PLMNewsEncoder, NRMSUserEncoder):
        register(cls)


@hookimpl
def register_recommenders(register: Register) -> None:
    register(NRMS)


@hookimpl
def register_metrics(register: Register) -> None:
    register(MINDMRR)
