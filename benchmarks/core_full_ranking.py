"""Full-ranking evaluation cost versus catalogue size: chunked running top-k vs a dense matrix.

Protocol: B users with random 64-d vectors, N random item vectors, dot scorer, one target per
user, 100 seen items masked, top-20 kept; each configuration runs in its own process so peak
RSS (ru_maxrss) is its own. Usage:

    python benchmarks/core_full_ranking.py                 # prints a table, writes benchmarks/results/core.md
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)
USERS, DIM, K = 256, 64, 20


def _measure(num_items: int, mode: str, chunk: int) -> dict:
    import torch

    from attnrec.evaluation import VectorScoring, rank_full
    from attnrec.scorers import DotScorer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    users = torch.randn(USERS, DIM)
    items = torch.randn(num_items + 1, DIM)
    targets = torch.randint(1, num_items + 1, (USERS, 1))
    seen = torch.randint(1, num_items + 1, (USERS, 100))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "chunked":
        ranking = rank_full(VectorScoring(users, items, DotScorer()), num_items + 1, targets, seen, K, chunk_size=chunk)
        top = ranking.topk
    else:
        scores = users @ items.T
        scores[:, 0] = float("-inf")
        scores.scatter_(1, seen, float("-inf"))
        top = scores.topk(K, dim=1).indices
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"items": num_items, "mode": mode, "seconds": seconds, "extra_peak_mib": (peak - base) / 1024, "top0": int(top[0, 0])}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(_measure(int(sys.argv[2]), sys.argv[3], 65536)))
        return
    rows = []
    for n in SIZES:
        for mode in ("chunked", "dense"):
            out = subprocess.run([sys.executable, __file__, "--one", str(n), mode], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lines = [
        "## Full-ranking evaluation: memory and time vs catalogue size",
        "",
        f"Protocol: {USERS} users x N items, dim {DIM}, dot scorer, 1 target + 100 seen items masked per user, "
        f"top-{K}; chunk 65,536 items; 2 CPU threads; one process per row (peak RSS above the inputs).",
        "Command: `python benchmarks/core_full_ranking.py`",
        "",
        "| items | method | seconds | extra peak RSS (MiB) |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        method = "attnrec rank_full (chunked, exact ranks + top-k)" if r["mode"] == "chunked" else "dense B x N matrix + topk (top-k only)"
        lines.append(f"| {r['items']:,} | {method} | {r['seconds']:.2f} | {r['extra_peak_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "core.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
