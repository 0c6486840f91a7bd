"""Data preparation at scale: a log of string ids through the data layer, stage by stage.

Writes a synthetic CSV of ``--rows`` interactions (Zipf-distributed users and items with string
ids such as ``"A1B2C3"``, integer timestamps), then times, in one process and one run:

* reading it: attnrec's ``read_table`` (pyarrow's CSV reader, then the id policy and checks with
  ``pyarrow.compute`` on each id column's distinct values) and pyarrow's bare CSV reader;
* reading it with the id codes the data module takes: ``read_table(dictionary_ids=True)`` (the
  reader's threads encode the ids) and ``read_table`` with the ids encoded again after it;
* id maps: ``IdMap`` (hashing) and the sort-based map it replaced (``np.unique`` + binary search);
* ``k_core(5)``: the integer-code version and the one that re-sorted the raw strings every round;
* exact duplicates: a sorted int64 mixing (user, item) and time, and the same int64 hashed;
* each user's items in time order (``sequences``): one int64 key sorted by torch, and Arrow's
  stable two-key sort;
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv

from attnrec.data import IdMap, InteractionDataModule, k_core, read_table
from attnrec.data.datamodule import _repeated
from attnrec.data.interactions import sequences


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


def hashed_repeated(pairs: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The replaced duplicate search: the mixed int64 hashed by pandas, not sorted."""
    mixed = pairs * np.int64(-7046029254386353131) ^ (times + 0.0).view(np.int64)
    maybe = np.flatnonzero(pd.Series(mixed).duplicated(keep=False).to_numpy())
    repeated = np.zeros(len(pairs), dtype=bool)
    repeated[maybe] = pd.DataFrame({"pair": pairs[maybe], "time": times[maybe]}).duplicated().to_numpy()
    return repeated


def arrow_sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray, num_users: int) -> list[np.ndarray]:
    """The replaced order: Arrow's stable sort on the two keys."""
    order = pc.sort_indices(pa.table({"user": users, "time": times}), [("user", "ascending"), ("time", "ascending")])
    users, items = users[order.to_numpy()], items[order.to_numpy()]
    bounds = np.searchsorted(users, np.arange(num_users + 2))
    return [items[bounds[u] : bounds[u + 1]] for u in range(num_users + 1)]


def encoded_again(path: str, columns: dict[str, str]) -> list[pa.Array]:
    """The replaced reading for the data module: the ids read as text, then encoded again."""
    table = read_table(path, columns)
    return [pc.dictionary_encode(table[name].combine_chunks()) for name in ("user", "item")]


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
            _, t_codes = timed(read_table, str(path), columns, dictionary_ids=True)
            _, t_codes_old = timed(encoded_again, str(path), columns)
            users = np.asarray(table["user"], dtype=object)
            items = np.asarray(table["item"], dtype=object)
            (user_ids, item_ids), t_map = timed(lambda: (IdMap(users, "user").encode(users), IdMap(items, "item").encode(items)))
            (_, t_map_old) = timed(lambda: (sorted_id_map(users), sorted_id_map(items)))
            keep, t_core = timed(k_core, users, items, args.k)
            keep_old, t_core_old = timed(sorting_k_core, users, items, args.k)
            assert (keep == keep_old).all(), "the two k-cores disagree"
            times = table["timestamp"].to_numpy()
            pairs = user_ids * (int(item_ids.max()) + 1) + item_ids
            repeated, t_dup = timed(_repeated, pairs, times)
            repeated_old, t_dup_old = timed(hashed_repeated, pairs, times)
            assert (repeated == repeated_old).all(), "the two duplicate searches disagree"
            num_users = int(user_ids.max())
            seqs, t_seq = timed(sequences, user_ids, item_ids, times, num_users)
            seqs_old, t_seq_old = timed(arrow_sequences, user_ids, item_ids, times, num_users)
            assert all(np.array_equal(a, b) for a, b in zip(seqs, seqs_old)), "the two orders disagree"
            path.unlink()
    rows = [
        ("read the CSV", f"read_table {t_read:.2f} s", f"pyarrow.csv.read_csv {t_arrow:.2f} s", t_read / t_arrow),
        ("read + id codes", f"codes read {t_codes:.2f} s", f"encoded again {t_codes_old:.2f} s", t_codes_old / t_codes),
        ("id maps + encode (users, items)", f"IdMap {t_map:.2f} s", f"sort + search {t_map_old:.2f} s", t_map_old / t_map),
        (f"{args.k}-core", f"codes + bincount {t_core:.2f} s", f"np.unique per round {t_core_old:.2f} s", t_core_old / t_core),
        ("exact duplicates", f"sorted int64 {t_dup:.2f} s", f"hashed int64 {t_dup_old:.2f} s", t_dup_old / t_dup),
        ("order by (user, time)", f"one int64 key {t_seq:.2f} s", f"Arrow, two keys {t_seq_old:.2f} s", t_seq_old / t_seq),
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
