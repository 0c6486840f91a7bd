"""The e-commerce data modules: behaviour logs with side features, and the Taobao UserBehavior
CSV from a local file or a cached download, with clear errors on malformed rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnrec.data import DataFormatError
from attnrec_ecommerce import EcommerceDataModule, TaobaoDataModule

TAOBAO = """\
1,101,7,pv,1511544070
1,102,7,pv,1511544080
1,103,8,cart,1511544090
1,104,8,buy,1511544100
2,101,7,pv,1511544071
2,105,9,fav,1511544081
2,102,7,buy,1511544091
3,103,8,pv,1511544072
3,104,8,pv,1511544082
3,105,9,buy,1511544092
"""


def write(tmp_path: Path, text: str, name: str = "UserBehavior.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_taobao_reads_log_and_categories(tmp_path: Path) -> None:
    data = TaobaoDataModule(path=str(write(tmp_path, TAOBAO)), max_len=5)
    assert (data.num_users, data.num_items) == (3, 5)
    category = data.catalog.features["category"]
    assert category.shape == (6,) and category[0] == 0  # row 0 is padding
    # items 101 and 102 share category 7; 103 has another one
    ids = {raw: i for i, raw in enumerate(data.catalog.raw_ids)}
    assert category[ids[101]] == category[ids[102]] != category[ids[103]]
    assert data.user_history(1).tolist() == [ids[101], ids[102], ids[103], ids[104]]  # time order


def test_taobao_behaviour_filter_is_in_the_protocol(tmp_path: Path) -> None:
    data = TaobaoDataModule(path=str(write(tmp_path, TAOBAO)), behaviors=["buy"])
    assert data.num_users == 3 and data.num_items == 3
    assert data.protocol["filtering"] == "behavior in {buy}"
    with pytest.raises(ValueError, match="unknown behaviour 'click'; choose from pv, cart, fav, buy"):
        TaobaoDataModule(path="x.csv", behaviors=["click"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2,106,9,click,1511544099", r"line 3, column 'behavior': 'click' is not one of pv, cart, fav, buy"),
        ("2,abc,9,pv,1511544099", r"line 3, column 'item': 'abc' is not an integer"),
        ("2,106,9,pv", r"line 3, column 'timestamp': an empty field \(too few fields\?\)"),
        ("2,106,9,pv,1511544099,extra", r"Expected 5 fields in line 3, saw 6"),
    ],
)
def test_taobao_rejects_malformed_rows(tmp_path: Path, row: str, message: str) -> None:
    lines = TAOBAO.splitlines()
    path = write(tmp_path, "\n".join([*lines[:2], row, *lines[2:]]) + "\n")
    with pytest.raises(DataFormatError, match=message) as error:
        TaobaoDataModule(path=str(path)).num_items
    assert str(path) in str(error.value) and "user_id,item_id,category_id,behavior_type,timestamp" in str(error.value)


def test_taobao_downloads_once_into_the_cache(tmp_path: Path) -> None:
    source = write(tmp_path, TAOBAO, "mirror.csv")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="no published checksum"):
        assert TaobaoDataModule(url=source.as_uri(), root=str(cache)).num_items == 5
    assert (cache / "mirror.csv").exists()
    source.unlink()  # a second module reads the cached copy
    assert TaobaoDataModule(url=source.as_uri(), root=str(cache)).num_users == 3


def test_taobao_without_a_source_says_where_to_get_it() -> None:
    with pytest.raises(FileNotFoundError, match="tianchi.aliyun.com/dataset/649"):
        TaobaoDataModule().num_items


LOG = """\
uid,sku,ts,event,cat,brand,price
u1,a,1,view,shoes,acme,10.5
u1,b,2,cart,shoes,,20
u1,c,3,purchase,hats,hatco,
u2,a,4,view,shoes,acme,10.5
u2,d,5,purchase,hats,hatco,99
u2,e,6,view,bags,,55
"""


def test_ecommerce_log_side_features_with_gaps(tmp_path: Path) -> None:
    columns = {"user": "uid", "item": "sku", "timestamp": "ts", "behavior": "event", "category": "cat"}
    data = EcommerceDataModule(path=str(write(tmp_path, LOG, "log.csv")), columns=columns, price_buckets=2)
    features = data.catalog.features
    assert sorted(features) == ["brand", "category", "price", "price_bucket"]
    ids = {raw: i for i, raw in enumerate(data.catalog.raw_ids)}
    assert features["brand"][ids["b"]] == 0 and features["brand"][ids["a"]] > 0  # missing brand = unknown (0)
    assert features["price_bucket"][ids["c"]] == 0 and features["price"][ids["c"]] == 0  # missing price
    cheap, dear = features["price_bucket"][ids["a"]], features["price_bucket"][ids["d"]]
    assert cheap != dear and {int(cheap), int(dear)} == {1, 2}
    assert torch.isclose(features["price"][ids["d"]], torch.tensor(99.0))
    purchases = EcommerceDataModule(
        path=str(write(tmp_path, LOG, "log.csv")), columns=columns, behaviors=["purchase"]
    )
    assert purchases.num_items == 2 and purchases.protocol["filtering"] == "behavior in {purchase}"


def test_ecommerce_log_errors_name_the_field(tmp_path: Path) -> None:
    bad = LOG.replace("u2,e,6,view,bags,,55", "u2,e,6,view,bags,,cheap")
    columns = {"user": "uid", "item": "sku", "timestamp": "ts", "category": "cat"}
    with pytest.raises(DataFormatError, match=r"item 'e', column 'price': 'cheap' is not a number"):
        EcommerceDataModule(path=str(write(tmp_path, bad, "log.csv")), columns=columns).num_items
    with pytest.raises(DataFormatError, match="no 'behavior' column"):
        EcommerceDataModule(path=str(write(tmp_path, LOG, "log.csv")), columns=columns, behaviors=["view"]).num_items


def test_modules_take_eval_mask_seen_and_rebuild_from_hyperparameters(tmp_path: Path) -> None:
    columns = {"user": "uid", "item": "sku", "timestamp": "ts", "category": "cat"}
    modules = [
        TaobaoDataModule(path=str(write(tmp_path, TAOBAO)), max_len=5, eval_mask_seen=False),
        EcommerceDataModule(path=str(write(tmp_path, LOG, "log.csv")), columns=columns, max_len=5, eval_mask_seen=False),
    ]
    for data in modules:
        assert "seen" not in next(iter(data.test_dataloader()))
        assert "NOT masked" in data.protocol["candidates"]
        again = type(data)(**data.hparams)  # what a checkpoint does
        assert (again.max_len, again.eval_mask_seen, again.num_items) == (5, False, data.num_items)
    assert not {"columns", "sep", "table"} & set(modules[0].hparams)  # Taobao's layout is fixed
    assert modules[1].hparams["columns"] == columns
