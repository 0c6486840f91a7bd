"""The bundled default data set: a seeded generator with planted, documented structure.

Nothing is downloaded and no licence applies: the data are generated on the fly (about a
second) from a seed. Each user's sequence mixes three planted signals:

* **sequential transitions** – every item ``i`` has a fixed successor ``succ(i)`` in the
  same category; with probability ``p_transition`` the next item is the successor of the
  previous one (learnable only by a model that reads the order of the history);
* **category preferences** – otherwise a category is drawn from the user's two favourite
  categories (probability ``p_favourite``) or uniformly, then an item within it;
* **popularity skew** – items within a category are drawn by a Zipf law (exponent
  ``zipf``), so a popularity baseline is non-trivial but far from the planted optimum.

Items are never repeated within a user's sequence, so full-ranking evaluation with seen items
masked is well defined.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .datamodule import Loaded, SequenceDataModule

CATEGORIES = [
    "Books", "Garden", "Kitchen", "Toys", "Sports", "Music", "Beauty", "Outdoors",
    "Office", "Pets", "Tools", "Games", "Crafts", "Baby", "Travel", "Health",
    "Audio", "Camera", "Shoes", "Watches", "Grocery", "Auto", "Lighting", "Bedding",
]
ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Smart", "Vintage", "Pro", "Mini", "Ultra", "Cozy"]


def generate(
    num_users: int = 2000,
    num_items: int = 800,
    num_categories: int = 16,
    min_length: int = 15,
    max_length: int = 60,
    p_transition: float = 0.5,
    p_favourite: float = 0.8,
    zipf: float = 1.1,
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """Interactions (``user, item, timestamp``) and items (``item, title, category``)."""
    if num_categories > len(CATEGORIES):
        raise ValueError(f"num_categories must be at most {len(CATEGORIES)}")
    if max_length > num_items // 2:
        raise ValueError("max_length must be at most half of num_items (sequences never repeat an item)")
    rng = np.random.default_rng(seed)
    category = np.arange(num_items) % num_categories  # item i (0-based) -> category
    members = [np.flatnonzero(category == c) for c in range(num_categories)]
    within = []  # Zipf weights over a random order of each category's items
    for items in members:
        ranks = rng.permutation(len(items)) + 1
        weights = 1.0 / ranks**zipf
        within.append(weights / weights.sum())
    successor = np.empty(num_items, dtype=np.int64)
    for items in members:  # one random cycle per category
        order = rng.permutation(items)
        successor[order] = np.roll(order, -1)

    users, items_out, times = [], [], []
    for user in range(num_users):
        favourites = rng.choice(num_categories, size=2, replace=False)
        length = int(rng.integers(min_length, max_length + 1))
        seen: set[int] = set()
        previous = -1
        clock = float(rng.integers(0, 10**6))
        for _ in range(length):
            item = -1
            if previous >= 0 and rng.random() < p_transition and successor[previous] not in seen:
                item = int(successor[previous])
            while item < 0 or item in seen:
                c = int(favourites[rng.integers(2)]) if rng.random() < p_favourite else int(rng.integers(num_categories))
                item = int(rng.choice(members[c], p=within[c]))
            seen.add(item)
            clock += float(rng.integers(60, 86400))
            users.append(user + 1), items_out.append(item + 1), times.append(clock)
            previous = item
    interactions = pa.table(
        {"user": np.asarray(users), "item": np.asarray(items_out), "timestamp": np.asarray(times)}
    )
    titles = [f"{ADJECTIVES[i % len(ADJECTIVES)]} {CATEGORIES[category[i]]} item {i + 1}" for i in range(num_items)]
    catalogue = pa.table(
        {"item": np.arange(1, num_items + 1), "title": titles, "category": [CATEGORIES[c] for c in category]}
    )
    return interactions, catalogue


class SyntheticDataModule(SequenceDataModule):
    """The default data: :func:`generate`'s planted-structure shop log (see the module docstring).

    Split, window, sampling and loader arguments are :class:`SequenceDataModule`'s.
    """

    def __init__(
        self,
        num_users: int = 2000,
        num_items: int = 800,
        num_categories: int = 16,
        p_transition: float = 0.5,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.generator_args = dict(
            num_users=num_users, num_items=num_items, num_categories=num_categories,
            p_transition=p_transition, seed=generator_seed,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return f"synthetic-shop(seed={self.generator_args['seed']})"

    def load(self) -> Loaded:
        interactions, items = generate(**self.generator_args)
        return Loaded(interactions, items)
