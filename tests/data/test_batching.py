"""Length-aware batching: short histories cost their real length, and a user's scores do not
depend on how wide the batch is; the one-line-per-user loader keeps every interaction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnrec import Recommender
from attnrec.data import DataFormatError, UserSequencesDataModule
from attnrec.data.sequences import Collate, EvalLists, LengthGroupedSampler, TrainWindows


def test_length_grouped_sampler_is_a_permutation_of_similar_length_batches() -> None:
    lengths = np.random.default_rng(0).integers(1, 51, size=1000)
    torch.manual_seed(0)
    order = list(LengthGroupedSampler(lengths, batch_size=32))
    assert sorted(order) == list(range(1000))  # every example exactly once
    batches = [lengths[order[i : i + 32]] for i in range(0, 1000, 32)]
    padded = sum(len(b) * b.max() for b in batches)
    random_order = np.random.default_rng(1).permutation(1000)
    random_padded = sum(len(b) * b.max() for b in (lengths[random_order[i : i + 32]] for i in range(0, 1000, 32)))
    assert padded < 0.65 * random_padded  # grouping removes most of the padding
    torch.manual_seed(0)
    assert list(LengthGroupedSampler(lengths, batch_size=32)) == order  # seeded by torch's generator
    assert list(LengthGroupedSampler(lengths, batch_size=32)) != order  # and a new order each epoch


def test_collate_pads_to_the_longest_history_or_to_max_len() -> None:
    examples = [{"user": 1, "history": np.array([3, 4]), "target": np.array([4, 5])},
                {"user": 2, "history": np.array([7]), "target": np.array([8])}]  # fmt: skip
    longest = Collate(10, pad="longest")(examples)
    fixed = Collate(10, pad="max_len")(examples)
    assert longest["history"].tolist() == [[3, 4], [0, 7]] and longest["target"].tolist() == [[4, 5], [0, 8]]
    assert fixed["history"].shape == (2, 10) and torch.equal(fixed["history"][:, -2:], longest["history"])
    with pytest.raises(ValueError, match="pad='widest'"):
        Collate(10, pad="widest")
    lists = [{"user": 1, "history": np.array([], dtype=np.int64), "targets": np.array([5, 6, 9])},
             {"user": 2, "history": np.array([2, 3, 4]), "targets": np.array([7])}]  # fmt: skip
    batch = Collate(10, pad="longest")(lists)
    assert batch["history"].tolist() == [[0, 0, 0], [2, 3, 4]] and batch["targets"].tolist() == [[5, 6, 9], [7, 0, 0]]
    with pytest.raises(ValueError, match="a row of 3 items does not fit a width of 2"):
        Collate(2, pad="max_len")(lists)


def test_shared_negatives_are_one_draw_for_the_batch() -> None:
    from attnrec.data.sequences import NegativeSampler

    examples = [{"user": 1, "history": np.array([3, 4]), "target": np.array([4, 5])},
                {"user": 2, "history": np.array([7]), "target": np.array([8])}]  # fmt: skip
    torch.manual_seed(0)
    batch = Collate(10, num_negatives=6, sampler=NegativeSampler(50, "popularity", np.arange(51.0)), shared=True)(examples)
    assert "negatives" not in batch and batch["shared_negatives"].shape == (6,)
    assert batch["shared_negatives_logq"].shape == (6,) and batch["target_logq"].shape == batch["target"].shape


def test_train_windows_know_their_lengths() -> None:
    windows = TrainWindows([np.array([1, 2, 3, 4, 5]), np.array([6, 7])], max_len=3, stride=3)
    assert windows.lengths.tolist() == [len(windows[i]["history"]) for i in range(len(windows))]


def test_eval_lists_by_length_serve_every_list_once_shortest_first() -> None:
    histories = [np.arange(1, n + 1) for n in (5, 1, 3)]
    lists = EvalLists(np.array([10, 11, 12]), histories, [np.array([9])] * 3, max_len=4, by_length=True)
    assert [lists[i]["user"] for i in range(3)] == [11, 12, 10]


def test_a_users_scores_do_not_depend_on_the_batch_width(synthetic_small) -> None:
    """The same user scored in a fixed-width (max_len) batch and in a length-aware one."""
    data = synthetic_small
    torch.manual_seed(0)
    model = Recommender(data.catalog, dim=16, max_len=data.max_len).eval()
    lists = data.eval_lists("val")
    examples = [lists[i] for i in range(len(lists))][:64]
    wide, narrow = Collate(data.max_len, pad="max_len")(examples), Collate(data.max_len, pad="longest")(examples)
    shortest = min(len(e["history"]) for e in examples)
    short = [e for e in examples if len(e["history"]) <= shortest + 1]
    alone = Collate(data.max_len, pad="longest")(short)
    assert alone["history"].shape[1] <= shortest + 1 < wide["history"].shape[1]
    with torch.no_grad():
        scores = model.scoring(wide).chunk(0, data.num_items + 1)
        assert torch.allclose(scores, model.scoring(narrow).chunk(0, data.num_items + 1), atol=1e-5)
        rows = [i for i, e in enumerate(examples) if len(e["history"]) <= shortest + 1]
        assert torch.allclose(scores[rows], model.scoring(alone).chunk(0, data.num_items + 1), atol=1e-5)


@pytest.fixture
def synthetic_small():
    from attnrec.data import SyntheticDataModule

    data = SyntheticDataModule(num_users=120, num_items=200, max_len=20, seed=0)
    data.setup("fit")
    return data


def test_user_sequences_loader_keeps_every_interaction(tmp_path: Path) -> None:
    path = tmp_path / "Toys.txt"
    path.write_text("1 10 11 12 13\n2 11 14 10\n\n3 12 13 14 10 11\n")
    data = UserSequencesDataModule(path=str(path), max_len=5)
    data.setup("fit")
    assert data.num_users == 3 and data.num_items == 5 and data.num_interactions == 12
    split = data.split_data
    user = data.user_map.index(1)
    assert [data.item_map.raw[i] for i in split.train[user]] == [10, 11]  # leave-one-out in line order
    assert data.item_map.raw[int(split.val[user][0])] == 12 and data.item_map.raw[int(split.test[user][0])] == 13
    assert data.name == "Toys"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 10 11\n2\n", r"bad\.txt, line 2: user '2' has no items"),
        ("1 10 11\n1 12\n", r"bad\.txt, line 2: user '1' already has line 1"),
        ("\n\n", r"bad\.txt: no lines with items"),
    ],
)
def test_user_sequences_loader_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message):
        UserSequencesDataModule(path=str(path)).setup("fit")
