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
