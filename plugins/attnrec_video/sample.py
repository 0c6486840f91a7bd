"""The bundled video sample: a seeded generator with planted, documented structure.

Nothing is downloaded and no licence applies; the tables are generated in about a second.

* **content clusters** – every video belongs to one of ``num_clusters`` clusters, and every
  content modality shows it: the visual and audio vectors are the cluster's centre plus
  Gaussian noise, two of a video's three tags come from the cluster's own tags, its title
  mixes cluster words with generic ones, and its duration is drawn around the cluster's
  typical length. A video's id says nothing its content does not also say.
* **users prefer clusters** – each user has two favourite clusters; a watch comes from them
  with probability ``p_favourite`` (else from any cluster), then a video is drawn within the
  cluster by a Zipf law (popularity skew).
* **watch ratio** – favourite-cluster videos are watched to the end (ratio around 0.9, up to
  2 for replays); the rest are skipped early (around 0.15). The ratio is therefore graded
  relevance: a weighted loss can tell interest from exploration.
* **missing modalities** – each content modality is absent for a fixed share of videos
  (``missing``), as uploads without a title, thumbnails that failed to embed, silent clips.

Which videos are *cold* (never seen in training) is decided by the data module's split
(``cold_items``), so the same generator serves warm and cold-start evaluation.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

THEMES = [
    "cooking", "football", "gaming", "travel", "makeup", "pets", "music", "fitness",
    "comedy", "cars", "dance", "science", "fashion", "fishing", "painting", "news",
]
GENERIC_WORDS = ["best", "new", "daily", "top", "quick", "my", "epic", "easy", "live", "short", "full", "video"]
DEFAULT_MISSING: Mapping[str, float] = {"title": 0.1, "tags": 0.1, "visual": 0.15, "audio": 0.25}


def generate_videos(
    num_users: int = 800,
    num_items: int = 400,
    num_clusters: int = 10,
    visual_dim: int = 32,
    audio_dim: int = 16,
    min_length: int = 12,
    max_length: int = 30,
    p_favourite: float = 0.85,
    noise: float = 0.6,
    zipf: float = 0.8,
    missing: Mapping[str, float] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Watch log (``user, item, timestamp, watch_time, duration``) and video table
    (``item, title, tags, duration, visual, audio``; a missing modality is ``None``)."""
    if num_clusters > len(THEMES):
        raise ValueError(f"num_clusters must be at most {len(THEMES)}, got {num_clusters}")
    if max_length > num_items // 2:
        raise ValueError("max_length must be at most half of num_items (a user never rewatches in the sample)")
    missing = dict(DEFAULT_MISSING if missing is None else missing)
    unknown = set(missing) - set(DEFAULT_MISSING)
    if unknown:
        raise ValueError(f"missing: unknown modalities {sorted(unknown)}; choose from {sorted(DEFAULT_MISSING)}")
    rng = np.random.default_rng(seed)
    cluster = rng.permutation(np.arange(num_items) % num_clusters)
    members = [np.flatnonzero(cluster == c) for c in range(num_clusters)]
    popularity = [1.0 / (rng.permutation(len(m)) + 1.0) ** zipf for m in members]
    popularity = [p / p.sum() for p in popularity]

    visual_centres = rng.normal(size=(num_clusters, visual_dim))
    audio_centres = rng.normal(size=(num_clusters, audio_dim))
    visual = visual_centres[cluster] + noise * rng.normal(size=(num_items, visual_dim))
    audio = audio_centres[cluster] + noise * rng.normal(size=(num_items, audio_dim))
    typical = np.exp(rng.uniform(np.log(8.0), np.log(300.0), num_clusters))  # seconds
    duration = np.round(typical[cluster] * np.exp(0.3 * rng.normal(size=num_items)), 1)
    all_tags = [f"{THEMES[c]}-{k}" for c in range(num_clusters) for k in range(4)]

    rows = []
    for i in range(num_items):
        theme = THEMES[cluster[i]]
        own = [f"{theme}-{k}" for k in rng.choice(4, size=2, replace=False)]
        tags = [*own, str(rng.choice(all_tags))]
        words = [theme, *rng.choice(GENERIC_WORDS, size=2, replace=False), f"{theme}{rng.integers(3)}"]
        rows.append(
            {
                "item": i + 1,
                "title": " ".join(rng.permutation(words)) if rng.random() >= missing.get("title", 0) else None,
                "tags": tags if rng.random() >= missing.get("tags", 0) else None,
                "duration": float(duration[i]),
                "visual": visual[i].astype(np.float32) if rng.random() >= missing.get("visual", 0) else None,
                "audio": audio[i].astype(np.float32) if rng.random() >= missing.get("audio", 0) else None,
            }
        )
    items = pd.DataFrame(rows)

    users, watched, times, watch_time, durations = [], [], [], [], []
    for user in range(1, num_users + 1):
        favourites = rng.choice(num_clusters, size=2, replace=False)
        length = int(rng.integers(min_length, max_length + 1))
        seen: set[int] = set()
        clock = float(rng.integers(0, 10**6))
        while len(seen) < length:
            liked = rng.random() < p_favourite
            c = int(favourites[rng.integers(2)]) if liked else int(rng.integers(num_clusters))
            item = int(rng.choice(members[c], p=popularity[c]))
            if item in seen:
                continue
            seen.add(item)
            interested = c in favourites
            ratio = rng.normal(0.9, 0.25) if interested else rng.normal(0.15, 0.08)
            ratio = float(np.clip(ratio, 0.02, 2.0))
            clock += float(rng.integers(30, 3600))
            users.append(user), watched.append(item + 1), times.append(clock)
            watch_time.append(round(ratio * duration[item], 2)), durations.append(float(duration[item]))
    interactions = pd.DataFrame(
        {"user": users, "item": watched, "timestamp": times, "watch_time": watch_time, "duration": durations}
    )
    return interactions, items
