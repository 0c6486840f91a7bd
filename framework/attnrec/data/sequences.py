"""Torch datasets over per-user sequences, negative samplers and the collate function."""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

Sampling = Literal["uniform", "popularity"]
Batching = Literal["length", "fixed"]
"""``length``: histories padded to the longest in their batch, training windows grouped by
length; ``fixed``: every history padded to ``max_len`` (the slow reference path)."""
REDRAW_ROUNDS = 20


class NegativeSampler:
    """Draws item ids ``1..N`` uniformly or proportionally to training popularity.

    Training draws are i.i.d. and may hit a user's other items (the usual cheap choice; the
    losses mask draws equal to the target). Evaluation draws exclude everything the user has
    seen and are seeded per list, so every process samples the same candidates.
    """

    def __init__(self, num_items: int, mode: Sampling = "uniform", popularity: np.ndarray | None = None) -> None:
        if mode not in ("uniform", "popularity"):
            raise ValueError(f"unknown negative sampling {mode!r}; choose 'uniform' or 'popularity'")
        self.num_items = num_items
        self.mode = mode
        if mode == "popularity":
            if popularity is None:
                raise ValueError("popularity sampling needs item popularity")
            weights = np.asarray(popularity, dtype=np.float64)[1:] + 1.0  # add-one: unseen items stay drawable
            self.probs = weights / weights.sum()
            self._torch_probs = torch.as_tensor(self.probs, dtype=torch.float32)
            self._log_probs = torch.log(torch.as_tensor(np.concatenate([[1.0], self.probs]), dtype=torch.float32))

    def sample(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
        """Training negatives of ``shape`` and, for popularity sampling, their log-probabilities."""
        count = int(np.prod(shape))
        if self.mode == "uniform":
            return torch.randint(1, self.num_items + 1, shape), None
        ids = torch.multinomial(self._torch_probs, count, replacement=True).view(shape) + 1
        return ids, self._log_probs[ids]

    def log_prob(self, items: Tensor) -> Tensor:
        return self._log_probs[items]

    def sample_excluding(self, rng: np.random.Generator, count: int, exclude: set[int]) -> np.ndarray:
        if self.num_items - len(exclude) < count:
            raise ValueError(
                f"cannot sample {count} negatives from {self.num_items} items when {len(exclude)} are excluded; "
                "lower eval_negatives"
            )
        chosen: list[int] = []
        taken = set(exclude)
        while len(chosen) < count:
            need = 2 * (count - len(chosen)) + 8
            if self.mode == "uniform":
                draws = rng.integers(1, self.num_items + 1, need)
            else:
                draws = rng.choice(self.num_items, size=need, p=self.probs) + 1
            for item in draws.tolist():
                if item not in taken:
                    taken.add(item)
                    chosen.append(item)
                    if len(chosen) == count:
                        break
        return np.asarray(chosen, dtype=np.int64)


class TrainWindows(Dataset):
    """Next-item training examples: windows of at most ``max_len`` positions over each user's
    training sequence, ending every ``stride`` positions from its end (``stride == max_len``:
    non-overlapping; ``1``: every prefix, RecBole's augmentation)."""

    def __init__(self, sequences: list[np.ndarray], max_len: int, stride: int) -> None:
        self.sequences = sequences
        self.max_len = max_len
        index = []
        for user, seq in enumerate(sequences):
            for end in range(len(seq) - 1, 0, -max(1, stride)):
                index.append((user, end))
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    @property
    def lengths(self) -> np.ndarray:
        """History length of every window (what its batch is padded to at most)."""
        return np.minimum(self.index[:, 1], self.max_len)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray | int]:
        user, end = self.index[i]
        seq = self.sequences[user]
        start = max(0, end - self.max_len)
        return {"user": int(user), "history": seq[start:end], "target": seq[start + 1 : end + 1]}


class EvalLists(Dataset):
    """One ranking list per user: recent ``history`` as input, ``targets`` to find, ``seen`` to mask.

    With ``negatives > 0`` the list is the targets plus that many sampled unseen items
    (``candidates`` + ``labels``), drawn with a per-list seed. ``mask_seen=False`` leaves seen
    items in the full ranking (RecBole's protocol for sequential models). ``by_length`` serves the
    lists in order of history length (stable), so a batch padded to its longest history wastes
    little; metrics are sums over lists and do not depend on the order.
    """

    def __init__(
        self,
        users: np.ndarray,
        histories: list[np.ndarray],
        targets: list[np.ndarray],
        max_len: int,
        negatives: int = 0,
        sampler: NegativeSampler | None = None,
        seed: int = 0,
        mask_seen: bool = True,
        by_length: bool = False,
    ) -> None:
        self.users, self.histories, self.targets = users, histories, targets
        self.mask_seen = mask_seen
        self.max_len = max_len
        self.negatives = negatives
        self.sampler = sampler
        self.seed = seed
        lengths = np.asarray([min(len(h), max_len) for h in histories], dtype=np.int64)
        self.order = np.argsort(lengths, kind="stable") if by_length else np.arange(len(users))

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, position: int) -> dict[str, np.ndarray | int]:
        i = int(self.order[position])
        history, targets = self.histories[i], self.targets[i]
        example: dict[str, np.ndarray | int] = {
            "user": int(self.users[i]),
            "history": history[-self.max_len :],
            "targets": targets,
        }
        if self.mask_seen:
            example["seen"] = history
        if self.negatives:
            assert self.sampler is not None
            rng = np.random.default_rng([self.seed, i])
            exclude = set(history.tolist()) | set(targets.tolist())
            negatives = self.sampler.sample_excluding(rng, self.negatives, exclude)
            example["candidates"] = np.concatenate([targets, negatives])
            example["labels"] = np.concatenate([np.ones(len(targets), np.int64), np.zeros(self.negatives, np.int64)])
        return example


def _pad(rows: list[np.ndarray], length: int, left: bool = False) -> Tensor:
    """``[len(rows), length]`` of the rows, 0-padded on the left or right; no row is longer than
    ``length``. One scatter of the concatenated rows: a tensor write per row cost a validation
    pass over Toys' 19,412 lists about 0.1 s."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    if len(rows) and lengths.max() > length:
        raise ValueError(f"a row of {lengths.max()} items does not fit a width of {length}")
    out = np.zeros((len(rows), length), dtype=np.int64)
    if lengths.any():
        values = np.concatenate([np.asarray(row) for row in rows]).astype(np.int64, copy=False)
        owner = np.repeat(np.arange(len(rows)), lengths)
        column = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        if left:
            column += (length - lengths)[owner]
        out[owner, column] = values
    return torch.from_numpy(out)


class Collate:
    """Pads examples into a batch: ``history``/``target`` left-padded to the longest history
    in the batch (``pad="longest"``, at most ``max_len``) or to ``max_len`` (``pad="max_len"``),
    lists right-padded, plus training negatives ``[B, L, K]`` when ``num_negatives > 0``, or
    with ``shared=True`` one draw for the whole batch, ``shared_negatives [K]`` (its accidental
    hits of a target are masked by the model, not redrawn).

    Left padding keeps the latest item in the last column and attention masks padding out, so
    a user's scores do not depend on the batch's width (to float rounding): short-history data
    then costs what its real items cost instead of ``max_len`` positions each.
    """

    def __init__(
        self,
        max_len: int,
        num_negatives: int = 0,
        sampler: NegativeSampler | None = None,
        pad: str = "max_len",
        shared: bool = False,
    ) -> None:
        if pad not in ("longest", "max_len"):
            raise ValueError(f"Collate: pad={pad!r}; choose 'longest' or 'max_len'")
        self.max_len = max_len
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.pad = pad
        self.shared = shared

    def __call__(self, examples: list[dict]) -> dict[str, Tensor]:
        """An empty list gives a training batch of no rows (Poisson sampling, as in
        differentially private training, can draw no user: the step still adds its noise)."""
        batch: dict[str, Tensor] = {"user": torch.tensor([e["user"] for e in examples], dtype=torch.long)}
        width = self.max_len
        if self.pad == "longest":
            width = max(1, min(self.max_len, max((len(e["history"]) for e in examples), default=0)))
        batch["history"] = _pad([e["history"] for e in examples], width, left=True)
        for key in ("targets", "seen", "candidates", "labels"):
            if examples and key in examples[0]:
                batch[key] = _pad([e[key] for e in examples], max(1, max(len(e[key]) for e in examples)))
        if not examples or "target" in examples[0]:
            target = _pad([e["target"] for e in examples], width, left=True)
            batch["target"] = target
            if self.num_negatives and self.shared:
                assert self.sampler is not None
                negatives, logq = self.sampler.sample((self.num_negatives,))
                batch["shared_negatives"] = negatives
                if logq is not None:
                    batch["shared_negatives_logq"] = logq
                    batch["target_logq"] = self.sampler.log_prob(target)
            elif self.num_negatives:
                assert self.sampler is not None
                negatives, logq = self.sampler.sample((*target.shape, self.num_negatives))
                # redraw accidental hits of the target (a few rounds clear them unless the catalogue
                # is tiny; the losses mask any that remain)
                for _ in range(REDRAW_ROUNDS):
                    hits = negatives == target.unsqueeze(-1)
                    if not bool(hits.any()):
                        break
                    redraw, redraw_logq = self.sampler.sample((int(hits.sum()),))
                    negatives[hits] = redraw
                    if logq is not None and redraw_logq is not None:
                        logq[hits] = redraw_logq
                batch["negatives"] = negatives
                if logq is not None:
                    batch["negatives_logq"] = logq
                    batch["target_logq"] = self.sampler.log_prob(target)
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Training order in which neighbouring examples have similar lengths: a random
    permutation, cut into groups of ``batch_size * group`` examples, each sorted by length and
    cut into batches, whose order is shuffled again. Batches stay random (a group spans many
    users) but are padded to a width close to their items' real length. Hand-written because
    torch has no length-grouped sampler; the idea is Hugging Face's ``LengthGroupedSampler``.
    Randomness comes from torch's global generator, which ``seed_everything`` and Lightning's
    resume set, as for ``RandomSampler``.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, group: int = 50) -> None:
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.group = group

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator().manual_seed(seed)
        permutation = torch.randperm(len(self.lengths), generator=generator)
        size = self.batch_size * self.group
        batches = []
        for group in permutation.split(size):
            ordered = group[self.lengths[group].argsort(descending=True, stable=True)]
            batches += list(ordered.split(self.batch_size))
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b].tolist()
