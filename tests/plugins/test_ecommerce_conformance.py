"""The plugin's components pass attnrec's conformance checks for their interfaces. (The
target-aware user encoders return one vector per candidate, not ``[B, D]``; their shapes are
checked in test_ecommerce_models.py.)"""

from __future__ import annotations

import functools
from pathlib import Path

from attnrec.testing import check_data_module, check_item_encoder, check_scorer
from attnrec_ecommerce import CTRScorer, EcommerceDataModule, FeatureItemEncoder, TaobaoDataModule


def test_feature_item_encoder_conforms() -> None:
    check_item_encoder(FeatureItemEncoder)
    check_item_encoder(functools.partial(FeatureItemEncoder, features=()))


def test_ctr_scorer_conforms() -> None:
    check_scorer(CTRScorer)
    check_scorer(functools.partial(CTRScorer, activation="prelu", hidden=(8,)))


def test_data_modules_conform(tmp_path: Path) -> None:
    rows = [f"{user},{100 + (user * 7 + step) % 13},{step % 3},pv,{1000 + step}" for user in range(1, 6) for step in range(6)]
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(rows) + "\n")
    check_data_module(TaobaoDataModule(path=str(path), max_len=4, batch_size=4))
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp,category,price\n" + "\n".join(
        f"{user},{100 + (user * 7 + step) % 13},{step},c{step % 3},{step + 0.5}" for user in range(1, 6) for step in range(6)
    ) + "\n")
    check_data_module(EcommerceDataModule(path=str(log), max_len=4, batch_size=4, eval_negatives=3))
