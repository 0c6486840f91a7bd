"""attnrec's e-commerce plugin: shop behaviour logs (generic, Taobao UserBehavior) and the
sequence recommenders of the e-commerce literature, SASRec, DIN and BST, with their building
blocks. Configs: ``plugins/attnrec_ecommerce/configs/*.yaml``; guide: ``docs/ecommerce.md``."""

from __future__ import annotations

import attnrec
from attnrec.hookspecs import Register

from .data import EcommerceDataModule, TaobaoDataModule
from .layers import BehaviorSequenceEncoder, CTRScorer, FeatureItemEncoder, TargetInterestEncoder
from .sasrec import SASRec
from .target import BST, DIN

__all__ = [
    "BST", "BehaviorSequenceEncoder", "CTRScorer", "DIN", "EcommerceDataModule", "FeatureItemEncoder", "SASRec",
    "TaobaoDataModule", "TargetInterestEncoder",
]  # fmt: skip


@attnrec.hookimpl
def register_data(register: Register) -> None:
    register(EcommerceDataModule)
    register(TaobaoDataModule)


@attnrec.hookimpl
def register_encoders(register: Register) -> None:
    for cls in (FeatureItemEncoder, TargetInterestEncoder, BehaviorSequenceEncoder):
        register(cls)


@attnrec.hookimpl
def register_scorers(register: Register) -> None:
    register(CTRScorer)


@attnrec.hookimpl
def register_recommenders(register: Register) -> None:
    for cls in (SASRec, DIN, BST):
        register(cls)
