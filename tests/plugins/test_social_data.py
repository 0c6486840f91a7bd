"""Social data: the bundled sample is its generator's output, the social file becomes the
friend -> user graph exactly, listen counts become log1p loss weights of the right pairs, the
Last.fm format keeps its given split, and bad social files fail naming file, line, field and
fix under the stated policy (self-loops refused; unknown users and duplicates refused or
dropped with a counting warning, never silently)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from attnrec.data import DataFormatError
from attnrec.testing import check_data_module

from attnrec_social.data import SAMPLE, LastFMSocialDataModule, SocialCatalog, SocialDataModule, SocialSampleDataModule
from attnrec_social.sample import generate

LISTENS = "user,artist,listens\n1,a,10\n1,b,3\n2,a,5\n2,c,7\n3,b,1\n3,c,2\n"


def _files(tmp_path: Path, social: str, listens: str = LISTENS) -> dict[str, object]:
    (tmp_path / "listens.csv").write_text(listens)
    (tmp_path / "friends.csv").write_text(social)
    return dict(
        path=str(tmp_path / "listens.csv"), social_path=str(tmp_path / "friends.csv"),
        columns={"item": "artist", "rating": "listens"}, split="ratio", val_ratio=0.0, test_ratio=0.0,
    )  # fmt: skip


def test_bundled_sample_is_the_generators_output() -> None:
    listens, friends = generate()
    pd.testing.assert_frame_equal(pd.read_csv(SAMPLE / "listens.csv"), listens)
    pd.testing.assert_frame_equal(pd.read_csv(SAMPLE / "friends.csv"), friends)


def test_social_graph_is_the_files_friendships_both_ways() -> None:
    data = SocialSampleDataModule()
    catalog = data.catalog
    assert isinstance(catalog, SocialCatalog)
    friends = pd.read_csv(SAMPLE / "friends.csv")
    # CSV ids are read as text in plain form (the core's id policy), so users are '1', '2', ...
    index = data.user_map.encode(friends["user"].astype(str).to_numpy()), data.user_map.encode(friends["friend"].astype(str).to_numpy())
    expected = {(int(a), int(b)) for a, b in zip(*index)} | {(int(b), int(a)) for a, b in zip(*index)}
    got = {tuple(e) for e in catalog.social_edges.T.tolist()}
    assert got == expected and catalog.social_edges.shape[1] == len(expected)
    assert catalog.user_ids[1:] == sorted(catalog.user_ids[1:])
    assert data.social_stats is not None and data.social_stats.edges == len(expected)
    assert "social=" in ", ".join(f"{k}={v}" for k, v in data.protocol.items())


def test_training_batches_weigh_targets_by_log_listens(tmp_path: Path) -> None:
    data = SocialDataModule(**_files(tmp_path, "user,friend\n1,2\n"), batch_size=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    listens = {("1", "a"): 10, ("1", "b"): 3, ("2", "a"): 5, ("2", "c"): 7, ("3", "b"): 1, ("3", "c"): 2}
    for row, column in (batch["target"] != 0).nonzero().tolist():
        user = data.user_map.raw[int(batch["user"][row])]
        item = data.item_map.raw[int(batch["target"][row, column])]
        assert batch["target_weight"][row, column].item() == pytest.approx(math.log1p(listens[(user, item)]))
    assert bool((batch["target_weight"][batch["target"] == 0] == 0).all())
    unweighted = SocialDataModule(**_files(tmp_path, "user,friend\n1,2\n"), weighting="none")
    unweighted.setup("fit")
    assert "target_weight" not in next(iter(unweighted.train_dataloader()))


@pytest.mark.parametrize(
    ("social", "pattern"),
    [
        ("user,friend\n1,2\n3,3\n", r"friends\.csv, line 3, fields 'user' and 'friend': user '3' is listed as their own friend \(a self-loop"),
        ("user,friend\n1,2\n2,9\n", r"friends\.csv, line 3, field 'friend': user '9' has no interactions.*unknown_users='drop'"),
        ("user,friend\n1,2\n2,3\n1,2\n", r"friends\.csv, line 4: repeats line 2 \(user '1', friend '2'; 1 repeated lines in all\).*duplicate_edges='drop'"),
        ("user,friend\n1,\n", r"friends\.csv, line 2, field 'friend': empty id"),
        ("member,buddy\n1,2\n", r"friends\.csv: missing column 'user' \(the 'user' field\); columns found: member, buddy\. Pass social_columns="),
    ],
    ids=["self-loop", "unknown-user", "duplicate", "empty-id", "missing-column"],
)
def test_bad_social_files_name_file_line_field_and_fix(tmp_path: Path, social: str, pattern: str) -> None:
    with pytest.raises(DataFormatError, match=pattern):
        SocialDataModule(**_files(tmp_path, social)).catalog


def test_drop_policies_warn_with_counts(tmp_path: Path) -> None:
    social = "user,friend\n1,2\n2,9\n9,8\n1,2\n"
    data = SocialDataModule(**_files(tmp_path, social), unknown_users="drop", duplicate_edges="drop")
    with pytest.warns(UserWarning) as caught:
        edges = data.catalog.social_edges
    messages = " | ".join(str(w.message) for w in caught)
    assert re.search(r"dropped 2 lines naming 2 users without interactions \(first: line 3, friend '9'\)", messages)
    assert re.search(r"line 5: repeats line 2 .* dropped, the first kept", messages)
    assert edges.tolist() == [[1, 2], [2, 1]]
    assert data.social_stats is not None and (data.social_stats.dropped_unknown, data.social_stats.dropped_duplicates) == (2, 1)


def test_an_artist_table_names_the_artists(tmp_path: Path) -> None:
    (tmp_path / "artists.csv").write_text("artist,title\na,Nina Simone\nc,Can\n")
    data = SocialDataModule(**_files(tmp_path, "user,friend\n1,2\n"), items_path=str(tmp_path / "artists.csv"))
    titles = {data.item_map.raw[i]: data.catalog.title(i) for i in range(1, data.num_items + 1)}
    assert titles == {"a": "Nina Simone", "b": "b", "c": "Can"}


def test_ids_follow_the_interactions_id_policy_and_parquet_reads(tmp_path: Path) -> None:
    pd.DataFrame({"u": [" 1", "2.0"], "f": ["2", "3"]}).to_parquet(tmp_path / "friends.parquet")
    files = _files(tmp_path, "") | {"social_path": str(tmp_path / "friends.parquet"), "social_columns": {"user": "u", "friend": "f"}}
    edges = SocialDataModule(**files).catalog.social_edges
    assert {tuple(e) for e in edges.T.tolist()} == {(2, 1), (1, 2), (3, 2), (2, 3)}


def test_directed_follows_keep_their_direction(tmp_path: Path) -> None:
    edges = SocialDataModule(**_files(tmp_path, "user,friend\n1,2\n"), symmetric=False).catalog.social_edges
    assert edges.tolist() == [[2], [1]]  # friend 2's vector flows to user 1


def test_listen_counts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"listens\.csv, line 4, field 'rating': 0\.0 is not a positive count.*weighting='none'"):
        SocialDataModule(**_files(tmp_path, "user,friend\n1,2\n", LISTENS.replace("2,a,5", "2,a,0"))).catalog


def test_lastfm_files_keep_the_given_split(tmp_path: Path) -> None:
    (tmp_path / "data1.txt").write_text("1\t10\t100\n1\t11\t5\n2\t10\t7\n2\t12\t1\n3\t11\t9\n3\t12\t2\n")
    (tmp_path / "test1.txt").write_text("1\t12\t4\n2\t11\t-8\n")
    with pytest.raises(DataFormatError, match=r"test1\.txt, line 2, field 'rating': -8\.0 is not a positive count"):
        LastFMSocialDataModule(str(tmp_path)).catalog
    (tmp_path / "test1.txt").write_text("1\t12\t4\n2\t11\t8\n")
    (tmp_path / "trustnetwork.txt").write_text("1\t2\r\n2\t1\r\n2\t3\r\n3\t2\r\n3\t99\r\n99\t3\r\n")
    data = LastFMSocialDataModule(str(tmp_path))
    with pytest.warns(UserWarning, match="dropped 2 lines naming 1 users without interactions"):
        catalog = data.catalog
    assert catalog.social_edges.tolist() == [[1, 2, 2, 3], [2, 1, 3, 2]]
    train = {(int(u), int(i)) for u, i in catalog.train_edges.T.tolist()}
    raw = {(data.user_map.raw[u], data.item_map.raw[i]) for u, i in train}
    assert raw == {(1, 10), (1, 11), (2, 10), (2, 12), (3, 11), (3, 12)}
    test = {(data.user_map.raw[u], data.item_map.raw[int(i)]) for u in range(1, 4) for i in data.split_data.test[u]}
    assert test == {(1, 12), (2, 11)}
    lists = data.eval_lists("val")
    assert [data.user_map.raw[u] for u in lists.users] == [1, 2]
    assert "given files" in data.protocol["split"]
    assert torch.equal(catalog.popularity, torch.as_tensor(np.bincount(catalog.train_edges[1], minlength=4), dtype=torch.float32))


def test_simulated_cold_users_keep_five_training_interactions_and_their_test_lists() -> None:
    full, cut = SocialSampleDataModule(), SocialSampleDataModule(cold_share=0.2)
    chosen = cut.simulated_cold
    eligible = [u for u in range(1, full.num_users + 1) if len(full.split_data.train[u]) > 5]
    assert len(chosen) == round(0.2 * len(eligible)) and set(chosen.tolist()) <= set(eligible)
    for user in chosen.tolist():
        assert len(cut.split_data.train[user]) == 5
        assert set(cut.split_data.train[user].tolist()) <= set(full.split_data.train[user].tolist())
        assert np.array_equal(cut.split_data.test[user], full.split_data.test[user])
    assert cut.catalog.train_edges.shape[1] == full.catalog.train_edges.shape[1] - sum(
        len(full.split_data.train[u]) - 5 for u in chosen.tolist()
    )
    assert "cold simulation" in cut.protocol


def test_sample_conforms_to_the_data_module_contract() -> None:
    check_data_module(SocialSampleDataModule(max_len=10))
