"""The id and duplicate policies: one user however their integer id is spelled, ambiguous
spellings refused naming both, exact duplicate interactions dropped with a warning (or refused,
or kept on request) so a repeated last interaction cannot leak the test target."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from attnrec.data import DataFormatError, InteractionDataModule
from jsonargparse import ArgumentParser

USERS, ITEMS_PER_USER = 20, 5


def log(path: Path, spell: Callable[[int, int], str] = lambda user, n: str(user), repeat_last: bool = False) -> Path:
    """20 users with 5 interactions each; ``spell(user, position)`` writes the user id."""
    lines = ["user,item,timestamp"]
    for user in range(1, USERS + 1):
        rows = [(spell(user, n), f"i{(user + n) % 30}", 1000 * user + n) for n in range(ITEMS_PER_USER)]
        lines += [",".join(map(str, row)) for row in rows + rows[-1:] * repeat_last]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_integer_ids_spelled_differently_are_one_user(tmp_path: Path) -> None:
    path = log(tmp_path / "log.csv", lambda user, n: [f"{user}", f" {user}", f"{user}.0"][n % 3])
    expected = r"log\.csv, column 'user': user ids written in more than one way: 20 \(e\.g\. '1' and ' 1'\)"
    with pytest.warns(UserWarning, match=expected):
        dm = InteractionDataModule(path=str(path))
        assert dm.num_users == USERS
    assert dm.user_map.raw[1:] == sorted(str(user) for user in range(1, USERS + 1))  # plain form, still text
    assert dm.user_map.index("7") == dm.user_map.index(" 7.0") == dm.user_map.index(7)  # requests are read alike


def test_spellings_of_one_integer_among_other_ids_are_refused_naming_both(tmp_path: Path) -> None:
    path = log(tmp_path / "log.csv", lambda user, n: "A" if user == 1 else f"{user}.0" if n == 3 else str(user))
    with pytest.raises(
        DataFormatError,
        match=r"log\.csv, line 7, column 'user': '2' and '2\.0' \(line 10\) are one integer written two ways.*one way",
    ):
        InteractionDataModule(path=str(path)).setup()
    zero_padded = log(tmp_path / "codes.csv", lambda user, n: f"{user:03d}" if user % 2 else str(user))
    dm = InteractionDataModule(path=str(zero_padded))
    assert dm.num_users == USERS and dm.user_map.raw[1:3] == ["001", "003"]  # codes kept as written


def test_exact_duplicates_are_dropped_with_a_warning_so_nothing_leaks(tmp_path: Path) -> None:
    path = log(tmp_path / "log.csv", repeat_last=True)
    with pytest.warns(UserWarning, match=r"log\.csv: dropped 20 interactions that repeat an earlier one exactly"):
        dm = InteractionDataModule(path=str(path))
        dm.setup()
    assert dm.num_interactions == USERS * ITEMS_PER_USER
    s = dm.split_data
    for user in range(1, USERS + 1):  # the test target is neither the validation target nor in the history
        assert s.test[user][0] != s.val[user][0] and s.test[user][0] not in s.history(user, "test")
    with pytest.raises(DataFormatError, match=r"20 interactions repeat .*e\.g\. user '1', item 'i5' at time 1004\.0"):
        InteractionDataModule(path=str(path), duplicates="error").setup()
    kept = InteractionDataModule(path=str(path), duplicates="keep")
    kept.setup()
    assert kept.num_interactions == USERS * (ITEMS_PER_USER + 1)
    assert all(np.array_equal(kept.split_data.test[u], kept.split_data.val[u]) for u in range(1, USERS + 1))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(InteractionDataModule, "data")
    assert parser.parse_args(["--data.duplicates=error"]).data.duplicates == "error"  # a typed CLI argument
    with pytest.raises(Exception, match="duplicates"):
        parser.parse_args(["--data.duplicates=ignore"])


def test_id_map_numbers_ids_in_sorted_order_and_refuses_unknown_ones() -> None:
    from attnrec.data import IdMap

    items = IdMap(np.array(["b", "a", "c", "a"], dtype=object), "item")
    assert items.raw == [None, "a", "b", "c"]  # sorted, not in order of appearance
    assert items.encode(np.array(["c", "a"], dtype=object)).tolist() == [3, 1]
    # an id the map does not hold once got the id of its sorted neighbour, silently
    with pytest.raises(KeyError, match=r"1 item ids are not among the 3 known items, e.g. 'bb'"):
        items.encode(np.array(["a", "bb"], dtype=object))
    users = IdMap(np.array([10, 3, 7]), "user")
    assert users.index(" 7.0") == users.index(7) == 2  # spelled as a command line gives it


def test_k_core_on_string_ids_drops_until_every_user_and_item_has_k() -> None:
    from attnrec.data import k_core

    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in rng.zipf(1.6, 5000) % 400], dtype=object)
    items = np.array([f"i{i}" for i in rng.zipf(1.4, 5000) % 900], dtype=object)
    keep = k_core(users, items, 3)
    _, user_counts = np.unique(users[keep], return_counts=True)
    _, item_counts = np.unique(items[keep], return_counts=True)
    assert 0 < keep.sum() < len(users) and user_counts.min() >= 3 and item_counts.min() >= 3
    # maximal: no dropped interaction could come back with both ends still at >= 3
    kept_users, kept_items = set(users[keep]), set(items[keep])
    assert not any(u in kept_users and i in kept_items for u, i in zip(users[~keep], items[~keep]))


def test_k_core_after_dropped_duplicates_keeps_rows_aligned(tmp_path: Path) -> None:
    # k-core once indexed the de-duplicated ids with row numbers of the whole table
    with pytest.warns(UserWarning, match=r"dropped 20 interactions"):
        cored = InteractionDataModule(path=str(log(tmp_path / "twice.csv", repeat_last=True)), k_core=2)
        cored.setup()
    once = InteractionDataModule(path=str(log(tmp_path / "once.csv")), k_core=2)
    once.setup()
    assert 0 < cored.num_interactions == once.num_interactions < USERS * ITEMS_PER_USER
    assert cored.item_map.raw == once.item_map.raw and cored.user_map.raw == once.user_map.raw
    for part in ("train", "val", "test"):
        ours, theirs = getattr(cored.split_data, part), getattr(once.split_data, part)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_repeated_rows_are_found_as_pandas_finds_them() -> None:
    import pandas as pd
    from attnrec.data.datamodule import _repeated

    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 40, 5000).astype(np.int64)
    times = rng.integers(0, 30, 5000).astype(np.float64)
    times[:10] = -0.0  # equal to 0.0
    expected = pd.DataFrame({"pair": pairs, "time": times}).duplicated().to_numpy()
    assert 0 < expected.sum() < len(pairs) and np.array_equal(_repeated(pairs, times), expected)
    for n in (0, 1):
        assert _repeated(pairs[:n], times[:n]).tolist() == [False] * n


def test_a_loaders_dictionary_ids_count_each_id_once() -> None:
    """A loader may return id columns dictionary-encoded, with a value twice in a dictionary;
    duplicates, k-core and the id maps see one id per value, as for the plain column."""
    import pyarrow as pa
    from attnrec.data import Loaded

    users = ["u1", "u1", "u1", "u2", "u2", "u2", "u2"]
    items = ["a", "b", "a", "a", "b", "c", "c"]
    dictionary = pa.array(["u1", "u2", "u1"])  # rows 1 and 2 name u1 through the third entry
    codes = pa.array([0, 2, 2, 1, 1, 1, 1], pa.int32())

    class Dictionaries(InteractionDataModule):
        def __init__(self, encoded: bool, **kwargs) -> None:
            super().__init__(**kwargs)
            self.encoded = encoded

        def load(self) -> Loaded:
            user = pa.DictionaryArray.from_arrays(codes, dictionary) if self.encoded else pa.array(users)
            return Loaded(pa.table({"user": user, "item": items, "timestamp": [1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0]}))

    modules = []
    for encoded in (False, True):
        with pytest.warns(UserWarning, match=r"dropped 2 interactions .* e\.g\. user 'u1', item 'a' at time 1\.0"):
            modules.append(Dictionaries(encoded, k_core=2))
            modules[-1].setup()
    plain, dictionaries = modules
    assert dictionaries.user_map.raw == plain.user_map.raw == [None, "u1", "u2"] and dictionaries.num_interactions == 4
    for part in ("train", "val", "test"):
        ours, theirs = getattr(dictionaries.split_data, part), getattr(plain.split_data, part)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
