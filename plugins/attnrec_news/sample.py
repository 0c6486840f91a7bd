"""The bundled news sample: a seeded generator that writes MIND-format files.

No text is redistributed (so no licence applies) and nothing is downloaded: the sample is
generated in about a second. It plants structure that a text-reading model can learn and a
popularity baseline cannot:

* **topical preferences** – every user has two favourite categories; their history is drawn
  from them with probability ``p_favourite``, and in an impression they click a favourite-
  category article with probability ``p_click_favourite``, any other with ``p_click_other``;
* **category-specific vocabulary** – a title mixes words of its category and subcategory with
  shared filler words, so the category is readable from the text (an id-only model of a
  fresh article cannot know it, but a text encoder can);
* **popularity skew** – articles are shown by a Zipf law, and a popular article's click
  probability is raised a little, so most-popular is a non-trivial but weak baseline.

Dev and test impressions show news partly unseen in training (as in MIND), and each user's
history in dev/test extends the train history with the clicks made in training impressions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

TOPICS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "sports": (
        ["team", "season", "coach", "match", "fans", "league", "win", "playoff", "score", "victory"],
        {
            "football": ["quarterback", "touchdown", "nfl", "yards", "kickoff", "linebacker"],
            "tennis": ["serve", "racket", "wimbledon", "grand", "slam", "tiebreak"],
            "golf": ["birdie", "putt", "fairway", "masters", "caddie", "bogey"],
        },
    ),
    "finance": (
        ["market", "stocks", "investors", "shares", "earnings", "bank", "profit", "rates", "economy", "trade"],
        {
            "markets": ["nasdaq", "dow", "index", "rally", "selloff", "bonds"],
            "banking": ["loan", "mortgage", "deposit", "credit", "lender", "interest"],
            "crypto": ["bitcoin", "token", "blockchain", "exchange", "wallet", "mining"],
        },
    ),
    "technology": (
        ["software", "app", "startup", "device", "update", "users", "data", "launch", "chip", "cloud"],
        {
            "gadgets": ["smartphone", "laptop", "tablet", "camera", "battery", "screen"],
            "ai": ["algorithm", "neural", "robot", "model", "chatbot", "automation"],
            "security": ["hackers", "breach", "password", "malware", "privacy", "encryption"],
        },
    ),
    "health": (
        ["doctors", "patients", "study", "hospital", "disease", "treatment", "risk", "care", "medical", "vaccine"],
        {
            "fitness": ["workout", "exercise", "running", "gym", "muscle", "yoga"],
            "nutrition": ["diet", "protein", "sugar", "vitamins", "calories", "vegetables"],
            "medicine": ["drug", "trial", "surgery", "therapy", "cancer", "clinic"],
        },
    ),
    "travel": (
        ["trip", "destination", "tourists", "vacation", "flight", "hotel", "city", "journey", "visit", "island"],
        {
            "flights": ["airline", "airport", "passengers", "delay", "boarding", "pilot"],
            "destinations": ["beach", "mountains", "resort", "cruise", "coast", "villa"],
            "tips": ["packing", "luggage", "budget", "passport", "itinerary", "booking"],
        },
    ),
    "food": (
        ["recipe", "chef", "kitchen", "dinner", "restaurant", "flavor", "dish", "taste", "meal", "cooking"],
        {
            "recipes": ["bake", "oven", "sauce", "pasta", "dessert", "soup"],
            "restaurants": ["menu", "waiter", "bistro", "reservation", "diner", "tasting"],
            "drinks": ["coffee", "wine", "beer", "cocktail", "tea", "brewery"],
        },
    ),
    "music": (
        ["album", "song", "band", "concert", "singer", "tour", "fans", "record", "stage", "hit"],
        {
            "pop": ["chart", "single", "video", "popstar", "dance", "remix"],
            "rock": ["guitar", "drummer", "riff", "festival", "amplifier", "punk"],
            "classical": ["orchestra", "symphony", "violin", "piano", "composer", "opera"],
        },
    ),
    "politics": (
        ["election", "senate", "vote", "president", "campaign", "policy", "law", "congress", "governor", "debate"],
        {
            "elections": ["ballot", "polls", "candidate", "primary", "voters", "turnout"],
            "congress": ["bill", "committee", "hearing", "lawmakers", "budget", "amendment"],
            "world": ["summit", "treaty", "diplomats", "sanctions", "minister", "embassy"],
        },
    ),
}
FILLER = ["the", "a", "of", "in", "to", "new", "after", "how", "why", "what", "top", "week", "says", "report",
          "first", "more", "big", "this", "year", "over", "with", "for", "best", "latest"]  # fmt: skip
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def _title(rng: np.random.Generator, category: str, subcategory: str) -> str:
    general, subs = TOPICS[category]
    words = list(rng.choice(subs[subcategory], size=int(rng.integers(1, 4)), replace=False))
    words += list(rng.choice(general, size=int(rng.integers(2, 4)), replace=False))
    words += list(rng.choice(FILLER, size=int(rng.integers(2, 5)), replace=False))
    rng.shuffle(words)
    return " ".join(words).capitalize()


def _time(day: int, rng: np.random.Generator) -> str:
    moment = dt.datetime(2019, 11, 9) + dt.timedelta(days=day, seconds=int(rng.integers(0, 86400)))
    text = moment.strftime(TIME_FORMAT)
    return text.lstrip("0").replace("/0", "/")  # MIND writes 11/9/2019 8:55:22 AM


def generate_mind(
    num_users: int = 500,
    num_news: int = 900,
    num_categories: int = 8,
    train_impressions: int = 5,
    candidates: tuple[int, int] = (8, 16),
    history_length: tuple[int, int] = (3, 25),
    p_favourite: float = 0.85,
    p_click_favourite: float = 0.4,
    p_click_other: float = 0.04,
    zipf: float = 0.8,
    seed: int = 0,
) -> dict[str, dict[str, list[str]]]:
    """MIND-format lines by split: ``{"train"|"dev"|"test": {"news.tsv": [...], "behaviors.tsv": [...]}}``.

    Each user has ``train_impressions`` training impressions and one each in dev and test.
    """
    if not 1 <= num_categories <= len(TOPICS):
        raise ValueError(f"num_categories must be between 1 and {len(TOPICS)}, got {num_categories}")
    if num_news < 4 * num_categories:
        raise ValueError(f"num_news={num_news} is too small for {num_categories} categories; use at least {4 * num_categories}")
    rng = np.random.default_rng(seed)
    categories = list(TOPICS)[:num_categories]
    news_category = rng.integers(num_categories, size=num_news)
    lines: list[str] = []
    for i in range(num_news):
        category = categories[news_category[i]]
        subcategory = str(rng.choice(list(TOPICS[category][1])))
        title = _title(rng, category, subcategory)
        abstract = _title(rng, category, subcategory).lower() + "."
        lines.append("\t".join([f"N{i + 1}", category, subcategory, title, abstract,
                                f"https://example.org/news/N{i + 1}", "[]", "[]"]))  # fmt: skip
    popularity = 1.0 / (rng.permutation(num_news) + 1.0) ** zipf
    by_category = [np.flatnonzero(news_category == c) for c in range(num_categories)]
    # news shown in dev/test is partly fresh: the last fifth of the ids never appears in training
    fresh = num_news - num_news // 5
    show_train = popularity.copy()
    show_train[fresh:] = 0.0
    show_train /= show_train.sum()
    show_eval = popularity / popularity.sum()
    boost = 0.8 + 0.4 * popularity / popularity.max()  # a popular article is clicked a little more often

    behaviors: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    impression_id = 0
    for user in range(1, num_users + 1):
        favourites = rng.choice(num_categories, size=2, replace=False)
        history: list[int] = []
        for _ in range(int(rng.integers(history_length[0], history_length[1] + 1))):
            c = int(rng.choice(favourites)) if rng.random() < p_favourite else int(rng.integers(num_categories))
            pool = by_category[c][by_category[c] < fresh]
            weights = popularity[pool] / popularity[pool].sum()
            item = int(rng.choice(pool, p=weights))
            if item not in history:
                history.append(item)
        clicks: list[int] = []
        for split, count, shown, day in (
            ("train", train_impressions, show_train, None),
            ("dev", 1, show_eval, 5),
            ("test", 1, show_eval, 6),
        ):
            past = history + [c for c in clicks if c not in history] if split != "train" else history
            for _ in range(count):
                size = int(rng.integers(candidates[0], candidates[1] + 1))
                shown_ids = rng.choice(num_news, size=size, replace=False, p=shown)
                liked = np.isin(news_category[shown_ids], favourites)
                p = np.where(liked, p_click_favourite, p_click_other) * boost[shown_ids]
                labels = rng.random(size) < np.clip(p, 0.0, 1.0)
                if not labels.any():  # MIND impressions hold at least one click
                    labels[int(np.argmax(p))] = True
                if labels.all():
                    labels[int(np.argmin(p))] = False
                if split == "train":
                    clicks += [int(x) for x in shown_ids[labels]]
                impression_id += 1
                when = _time(int(rng.integers(0, 5)) if day is None else day, rng)
                items = " ".join(f"N{x + 1}-{int(y)}" for x, y in zip(shown_ids, labels))
                behaviors[split].append(
                    "\t".join([str(impression_id), f"U{user}", when, " ".join(f"N{x + 1}" for x in past), items])
                )
    return {split: {"news.tsv": lines, "behaviors.tsv": rows} for split, rows in behaviors.items()}


def write_mind_sample(folder: str | Path, **kwargs: object) -> Path:
    """Write :func:`generate_mind`'s sample as ``folder/{train,dev,test}/{news,behaviors}.tsv``
    (the layout ``MINDDataModule(path=...)`` reads), e.g. to inspect it or to try the benchmark."""
    root = Path(folder)
    for split, files in generate_mind(**kwargs).items():  # type: ignore[arg-type]
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, rows in files.items():
            (root / split / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
