"""Data layer on real data: MovieLens-100K (RecBole atomic files) through MovieLensDataModule.

Checks the loader against the published statistics (943 users, 1,682 items, 100,000 ratings),
times load + id mapping + split for each split, and gives the most-popular baseline under each
protocol (the floor any model must beat). Usage:

    python benchmarks/data_loading.py [ML_100K_FOLDER]   # default ../shared/data/ml-100k

Writes benchmarks/results/data.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from attnrec.data import MovieLensDataModule
from attnrec.evaluation import evaluate_popularity
from attnrec.plugins import load_plugins

CASES = [
    ("loo", None, 0),
    ("loo", None, 100),
    ("loo", 4.0, 0),
    ("temporal", None, 0),
    ("ratio", None, 0),
]


def main() -> None:
    root = Path(__file__).resolve().parent
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent.parent / "shared" / "data" / "ml-100k"
    load_plugins()
    rows = []
    for split, min_rating, negatives in CASES:
        start = time.perf_counter()
        dm = MovieLensDataModule(path=str(folder), split=split, min_rating=min_rating, eval_negatives=negatives)
        dm.setup()
        seconds = time.perf_counter() - start
        popularity = evaluate_popularity(dm, "test", ks=(10,))
        protocol = dm.protocol
        rows.append(
            f"| {protocol['split']} | {protocol['candidates']} | {protocol['filtering']} | {dm.num_users:,} | "
            f"{dm.num_items:,} | {dm.num_interactions:,} | {len(dm.eval_lists('test')):,} | {seconds:.1f} | "
            f"{popularity['HR@10']:.4f} | {popularity['NDCG@10']:.4f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Data layer: MovieLens-100K through MovieLensDataModule",
            "",
            f"Data: RecBole atomic files `{folder.name}/ml-100k.inter` + `.item`; max length 50; "
            "test lists scored by the most-popular baseline (training popularity, seen items masked in full ranking).",
            "Command: `python benchmarks/data_loading.py ../shared/data/ml-100k`",
            "Timings (load + id maps + split, single process) were taken on a 2-core machine shared with other "
            "agents' jobs: treat them as noisy upper bounds.",
            "",
            "| split | candidates | filtering | users | items | interactions | test lists | seconds | "
            "Pop HR@10 | Pop NDCG@10 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    out = root / "results" / "data.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
