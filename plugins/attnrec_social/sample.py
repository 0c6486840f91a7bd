"""The bundled seeded sample: listeners in taste communities with friends mostly inside theirs.

``generate`` plants exactly what a social recommender should find: each listener belongs to
one of ``communities`` taste groups, listens mostly to that group's artists (with a Zipf
popularity inside the group, and higher listen counts there), and makes friends mostly inside
the group. A share of listeners is cold (3-6 artists), so their own history says little and
their friends say more. Artists are spread evenly over the groups, so global popularity is a
weak guide. ``python -m attnrec_social.sample`` rewrites ``data/listens.csv`` and
``data/friends.csv`` (a test checks that the bundled files are this function's output).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent / "data"


def generate(
    num_users: int = 400,
    num_artists: int = 300,
    communities: int = 8,
    artists_per_user: tuple[int, int] = (8, 30),
    cold_share: float = 0.2,
    in_group: float = 0.85,
    friends_per_user: int = 4,
    friends_in_group: float = 0.9,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(listens [user, artist, listens], friends [user, friend])``; each friendship is written
    once (the data module makes it mutual), with no self-loops or repeats."""
    rng = np.random.default_rng(seed)
    group_of_user = rng.integers(0, communities, num_users)
    group_of_artist = np.arange(num_artists) % communities
    rows = []
    for user in range(num_users):
        cold = rng.random() < cold_share
        count = int(rng.integers(3, 7)) if cold else int(rng.integers(*artists_per_user))
        own = np.flatnonzero(group_of_artist == group_of_user[user])
        zipf = 1.0 / np.arange(1, len(own) + 1) ** 0.8
        picked: set[int] = set()
        while len(picked) < count:
            if rng.random() < in_group:
                picked.add(int(rng.choice(own, p=zipf / zipf.sum())))
            else:
                picked.add(int(rng.integers(num_artists)))
        for artist in sorted(picked):
            mean = 5.5 if group_of_artist[artist] == group_of_user[user] else 3.5
            rows.append((user + 1, f"artist{artist + 1:03d}", int(np.ceil(rng.lognormal(mean, 1.0)))))
    listens = pd.DataFrame(rows, columns=["user", "artist", "listens"])
    pairs: set[tuple[int, int]] = set()
    for user in range(num_users):
        same = np.flatnonzero((group_of_user == group_of_user[user]) & (np.arange(num_users) != user))
        for _ in range(friends_per_user // 2 + 1):
            pool = same if rng.random() < friends_in_group and len(same) else np.delete(np.arange(num_users), user)
            friend = int(rng.choice(pool))
            pairs.add((min(user, friend) + 1, max(user, friend) + 1))
    friends = pd.DataFrame(sorted(pairs), columns=["user", "friend"])
    return listens, friends


def write(folder: Path = HERE) -> None:
    listens, friends = generate()
    folder.mkdir(parents=True, exist_ok=True)
    listens.to_csv(folder / "listens.csv", index=False)
    friends.to_csv(folder / "friends.csv", index=False)


if __name__ == "__main__":
    write()
