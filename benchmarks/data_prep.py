"""Data preparation at scale: a log of string ids through the data layer, stage by stage.

Writes a synthetic CSV of ``--rows`` interactions (Zipf-distributed users and items with string
ids such as ``"A1B2C3"``, integer timestamps), then times, in one process and one run:

* reading it: attnrec's ``read_table`` (pyarrow's CSV reader, then the id policy and checks with
  ``pyarrow.compute`` on each id column's distinct values) and pyarrow's bare CSV reader;
* id maps: ``IdMap`` (hashing) and the sort-based map it replaced (``np.unique`` + binary search);
* ``k_core(5)``: the integer-code version and the one that re-sorted the raw strings every round;
* the whole ``InteractionDataModule(path, k_core=5).setup()`` with its defaults (read, duplicates
  dropped, k-core, ids, leave-one-out split, catalog), in a fresh process of its own so that its
  peak resident memory is its own (``ru_maxrss``; the imports' share is given apart).

The stage comparisons run at the first size only (the replaced versions are slow); each further
size times the whole setup and its memory. The replaced versions are kept here, not in the
library, only to give each figure a ratio measured in the same run. Usage (run alone; the
machine must be otherwise idle)::

    python benchmarks/data_prep.py [--rows 2000000,20000000]

Writes benchmarks/results/data_prep.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
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
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, rows) % max(rows // 10, 1)
    items = rng.zipf(1.2, rows) % max(rows // 20, 1)

    def ids(prefix: str, codes: np.ndarray) -> pa.Array:  # "U0000A1B2": formatted per distinct code
        distinct, inverse = np.unique(codes, return_inverse=True)
        return pc.take(pa.array([f"{prefix}{c:08X}" for c in distinct.tolist()]), pa.array(inverse))

    table = pa.table({"user_id": ids("U", users), "item_id": ids("I", items),
                      "timestamp": rng.integers(1_500_000_000, 1_700_000_000, rows)})  # fmt: skip
    pyarrow.csv.write_csv(table, path)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def whole_setup(path: str, columns: dict[str, str], k: int, queue: multiprocessing.Queue) -> None:
    """In a fresh process: the data module's setup, its seconds and peak memory."""
    from attnrec.data import InteractionDataModule

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = InteractionDataModule(path=path, columns=columns, k_core=k)
    _, seconds = timed(data.setup)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"seconds": seconds, "peak_mib": peak / 1024, "base_mib": base / 1024, "users": data.num_users,
               "items": data.num_items, "interactions": data.num_interactions})  # fmt: skip


def in_fresh_process(path: Path, columns: dict[str, str], k: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=whole_setup, args=(str(path), columns, k, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2000000", help="comma-separated sizes; stages compared at the first")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",")]
    root = Path(__file__).resolve().parent
    columns = {"user": "user_id", "item": "item_id"}
    setups = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"log_{size}.csv"
            write_log(path, size)
            setups.append((size, in_fresh_process(path, columns, args.k)))
            if size != sizes[0]:
                path.unlink()
                continue
            table, t_read = timed(read_table, str(path), columns)
            _, t_arrow = timed(pyarrow.csv.read_csv, path)
            users = np.asarray(table["user"], dtype=object)
            items = np.asarray(table["item"], dtype=object)
            (_, t_map) = timed(lambda: (IdMap(users, "user").encode(users), IdMap(items, "item").encode(items)))
            (_, t_map_old) = timed(lambda: (sorted_id_map(users), sorted_id_map(items)))
            keep, t_core = timed(k_core, users, items, args.k)
            keep_old, t_core_old = timed(sorting_k_core, users, items, args.k)
            assert (keep == keep_old).all(), "the two k-cores disagree"
            path.unlink()
    rows = [
        ("read the CSV", f"read_table {t_read:.2f} s", f"pyarrow.csv.read_csv {t_arrow:.2f} s", t_read / t_arrow),
        ("id maps + encode (users, items)", f"IdMap {t_map:.2f} s", f"sort + search {t_map_old:.2f} s", t_map_old / t_map),
        (f"{args.k}-core", f"codes + bincount {t_core:.2f} s", f"np.unique per round {t_core_old:.2f} s", t_core_old / t_core),
    ]
    text = "\n".join(
        [
            "## Data preparation at scale: a string-id log",
            "",
            f"Data: synthetic CSVs of Zipf users and items with string ids (``write_log``). One process per "
            f"measurement, one run, {platform.machine()} with 2 cores, machine otherwise idle.",
            f"Command: `python benchmarks/data_prep.py --rows {args.rows}`",
            "",
            f"Stages at {sizes[0]:,} rows:",
            "",
            "| stage | attnrec | reference | ratio |",
            "|---|---:|---:|---:|",
            *(f"| {stage} | {ours} | {ref} | {ratio:.1f}x |" for stage, ours, ref, ratio in rows),
            "",
            "The reference for reading is pyarrow's bare reader (no id normalisation or per-row checks); the other "
            "references are the implementations this library used before (kept in this script only).",
            "",
            f"Whole `InteractionDataModule(path, k_core={args.k}).setup()` with its defaults (read, duplicates "
            "dropped, k-core, id maps, leave-one-out split, catalog), each in a fresh process:",
            "",
            "| rows | users | items | interactions kept | setup s | peak RSS MiB (after imports: +) |",
            "|---:|---:|---:|---:|---:|---:|",
            *(f"| {size:,} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | {r['seconds']:.1f} | "
              f"{r['peak_mib']:,.0f} (+{r['peak_mib'] - r['base_mib']:,.0f}) |" for size, r in setups),  # fmt: skip
            "",
        ]
    )
    print(text)
    out = root / "results" / "data_prep.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
