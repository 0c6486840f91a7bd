"""Data preparation at scale: a log of string ids through the data layer, stage by stage.

Writes a synthetic CSV of ``--rows`` interactions (Zipf-distributed users and items with string
ids such as ``"A1B2C3"``, integer timestamps), then times, in one process and one run:

* reading it: attnrec's ``read_table`` (pyarrow's CSV reader, then the id policy and checks with
  ``pyarrow.compute`` on each id column's distinct values) and pyarrow's bare CSV reader;
* id maps: ``IdMap`` (hashing) and the sort-based map it replaced (``np.unique`` + binary search);
* ``k_core(5)``: the integer-code version and the one that re-sorted the raw strings every round;
* the whole ``InteractionDataModule(path, k_core=5).setup()`` (read, duplicates, k-core, ids, split).

The replaced versions are kept here, not in the library, only to give each figure a ratio
measured in the same run. Usage (run alone; the machine must be otherwise idle)::

    python benchmarks/data_prep.py [--rows 2000000]

Writes benchmarks/results/data_prep.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv

from attnrec.data import IdMap, InteractionDataModule, k_core, read_table


def sorted_id_map(raw: np.ndarray) -> np.ndarray:
    """The replaced IdMap: sort every raw value, then a binary search per value."""
    values = np.unique(raw)
    return np.searchsorted(values, raw) + 1


def sorting_k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """The replaced k-core: ``np.unique`` over the raw ids in every round."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        _, u_inv, u_cnt = np.unique(users[keep], return_inverse=True, return_counts=True)
        _, i_inv, i_cnt = np.unique(items[keep], return_inverse=True, return_counts=True)
        ok = (u_cnt[u_inv] >= k) & (i_cnt[i_inv] >= k)
        if ok.all():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[~ok]] = False


def write_log(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, rows) % max(rows // 10, 1)
    items = rng.zipf(1.2, rows) % max(rows // 20, 1)
    frame = pd.DataFrame(
        {
            "user_id": [f"U{u:08X}" for u in users],
            "item_id": [f"I{i:08X}" for i in items],
            "timestamp": rng.integers(1_500_000_000, 1_700_000_000, rows),
        }
    )
    frame.to_csv(path, index=False)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.csv"
        write_log(path, args.rows)
        columns = {"user": "user_id", "item": "item_id"}
        table, t_read = timed(read_table, str(path), columns)
        _, t_arrow = timed(pyarrow.csv.read_csv, path)
        users = np.asarray(table["user"], dtype=object)
        items = np.asarray(table["item"], dtype=object)
        (_, t_map) = timed(lambda: (IdMap(users, "user").encode(users), IdMap(items, "item").encode(items)))
        (_, t_map_old) = timed(lambda: (sorted_id_map(users), sorted_id_map(items)))
        keep, t_core = timed(k_core, users, items, args.k)
        keep_old, t_core_old = timed(sorting_k_core, users, items, args.k)
        assert (keep == keep_old).all(), "the two k-cores disagree"
        data = InteractionDataModule(path=str(path), columns=columns, k_core=args.k, duplicates="keep")
        _, t_setup = timed(data.setup)
    rows = [
        ("read the CSV", f"read_table {t_read:.2f} s", f"pyarrow.csv.read_csv {t_arrow:.2f} s", t_read / t_arrow),
        ("id maps + encode (users, items)", f"IdMap {t_map:.2f} s", f"sort + search {t_map_old:.2f} s", t_map_old / t_map),
        (f"{args.k}-core", f"codes + bincount {t_core:.2f} s", f"np.unique per round {t_core_old:.2f} s", t_core_old / t_core),
    ]
    text = "\n".join(
        [
            "## Data preparation at scale: a string-id log",
            "",
            f"Data: synthetic CSV, {args.rows:,} rows, Zipf users and items with string ids "
            f"({data.num_users:,} users, {data.num_items:,} items, {data.num_interactions:,} interactions "
            f"left after {args.k}-core). One process, one run, {platform.machine()} with 2 cores, machine otherwise idle.",
            f"Command: `python benchmarks/data_prep.py --rows {args.rows}`",
            "",
            "| stage | attnrec | reference | ratio |",
            "|---|---:|---:|---:|",
            *(f"| {stage} | {ours} | {ref} | {ratio:.1f}x |" for stage, ours, ref, ratio in rows),
            "",
            f"Whole `InteractionDataModule(path, k_core={args.k}).setup()` (read, duplicates, k-core, id maps, "
            f"leave-one-out split, catalog): **{t_setup:.1f} s**.",
            "The reference for reading is pyarrow's bare reader (no id normalisation or per-row checks); the other "
            "references are the implementations this library used before (kept in this script only).",
            "",
        ]
    )
    print(text)
    out = root / "results" / "data_prep.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
