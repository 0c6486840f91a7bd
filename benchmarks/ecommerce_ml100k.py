"""SASRec, DIN and BST on MovieLens-100K (RecBole's atomic files), against RecBole 1.2.1's SASRec.

Protocol (the issue's): leave-one-out by timestamp per user (last item test, second-to-last
validation), no filtering, max length 50, hidden 64 (DIN: 32), 2 layers and 2 heads (SASRec),
loss as named. The checkpoint is the epoch with the best *validation* NDCG@10 (early stopping),
never chosen by test. SASRec is selected under full ranking and then tested under both full
ranking and the paper protocol (target + 100 uniformly sampled unseen items); DIN and BST score
every (user, candidate) pair with a network, so they are trained, selected and tested under the
sampled protocol only.

Each model runs in its own process (so ``ru_maxrss`` is that model's peak memory) under a
wall-clock budget (Lightning's ``max_time``). Run from the repository root:

    nice python benchmarks/ecommerce_ml100k.py            # all three, writes benchmarks/results/ecommerce.md
    nice python benchmarks/ecommerce_ml100k.py --models sasrec --budget 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ml-100k.inter")
RESULTS = Path(__file__).parent / "results" / "ecommerce.md"
REFERENCE = {"NDCG@10": 0.0636, "HR@10": 0.1326, "MRR@10": 0.0429, "seconds/epoch": 150.0, "minutes": 50}
BUDGETS = {"sasrec": 300, "din": 180, "bst": 180}


# RecBole 1.2.1's SASRec defaults beyond the issue's protocol: dropout 0.5 on hidden states and
# attention weights and a 256-wide feed-forward (lr 2e-3 instead of its 1e-3: a 5-minute budget).
SASREC = dict(dim=64, num_layers=2, num_heads=2, max_len=50, dropout=0.5, attention_dropout=0.5, ffn_dim=256, loss="CrossEntropyLoss")


def build(name: str, catalog: Any) -> Any:
    from attnrec_ecommerce import BST, DIN, SASRec

    common = dict(lr=2e-3, metrics=("HR", "NDCG", "MRR", "AUC"), ks=(10, 20))
    if name == "sasrec":
        return SASRec(catalog, **SASREC, **common)
    if name == "din":
        return DIN(catalog, dim=32, train_positions=8, **common)
    if name == "bst":
        # The paper's 1024-512-256 MLP over 51 x 64 flattened outputs costs 3.3 MFLOP per example
        # (115 s per epoch here); 256-128 keeps the architecture and fits the CPU budget.
        return BST(catalog, dim=64, max_len=50, num_layers=1, num_heads=8, hidden=(256, 128), train_positions=4, **common)
    raise SystemExit(f"unknown model {name!r}; choose sasrec, din or bst")


class EpochTimer:
    """Seconds of each training epoch (training only, evaluation excluded)."""

    def __init__(self) -> None:
        import lightning as L

        class Callback(L.Callback):
            def on_train_epoch_start(cb, trainer: Any, module: Any) -> None:  # noqa: N805
                cb.start = time.perf_counter()

            def on_train_epoch_end(cb, trainer: Any, module: Any) -> None:  # noqa: N805
                self.epochs.append(time.perf_counter() - cb.start)

        self.epochs: list[float] = []
        self.callback = Callback()


def run_one(name: str, budget: int, threads: int, data_path: str, root: str) -> dict[str, Any]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from attnrec.data import MovieLensDataModule

    torch.set_num_threads(threads)
    L.seed_everything(0, verbose=False)
    sampled_only = name != "sasrec"
    eval_negatives = 100 if sampled_only else 0
    data = MovieLensDataModule(
        path=data_path, max_len=50, batch_size=128, num_negatives=0 if name == "sasrec" else 1,
        eval_negatives=eval_negatives,
    )  # fmt: skip
    model = build(name, data.catalog)
    timer = EpochTimer()
    checkpoint = ModelCheckpoint(dirpath=os.path.join(root, name), monitor="val/NDCG@10", mode="max")
    trainer = L.Trainer(
        max_epochs=200, max_time={"seconds": budget}, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[checkpoint, EarlyStopping(monitor="val/NDCG@10", mode="max", patience=10), timer.callback],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, data)
    train_wall = time.perf_counter() - start
    protocols = {"sampled": data} if sampled_only else {
        "full": data,
        # RecBole's FullSortEvalDataLoader masks no history for sequential models: the parity row
        "full_unmasked": MovieLensDataModule(path=data_path, max_len=50, eval_mask_seen=False),
        "sampled": MovieLensDataModule(path=data_path, max_len=50, eval_negatives=100),
    }  # fmt: skip
    results: dict[str, Any] = {
        "model": name, "epochs": len(timer.epochs), "best_epoch": int(checkpoint.best_model_path.split("epoch=")[1].split("-")[0]),
        "seconds_per_epoch": sum(timer.epochs) / max(1, len(timer.epochs)), "train_wall_s": train_wall,
        "best_val_NDCG@10": float(checkpoint.best_model_score), "threads": threads,
    }  # fmt: skip
    for protocol, module in protocols.items():
        trainer.test(model, module, ckpt_path=checkpoint.best_model_path, verbose=False)
        results[protocol] = {k: model.test_results[k] for k in ("NDCG@10", "HR@10", "MRR@10", "AUC")}
        results[f"{protocol}_protocol"] = model.protocol
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def protocol_tuple(protocol: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in protocol.items())


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results page; the rows themselves ride along in a comment, so a run of some models
    updates their rows and keeps the others'."""
    lines = [
        "# E-commerce plugin on MovieLens-100K",
        "",
        "Commands (repository root), by model:",
        "",
        *[f"- {row['model']}: `{row['command']}`" for row in rows],
        "",
        "Data: RecBole's `ml-100k.inter` (943 users, 1682 items, 100,000 ratings, every rating an interaction).",
        "Checkpoint chosen by validation NDCG@10 (early stopping, patience 10) under each model's selection",
        "protocol; test figures come from that checkpoint. Timings were taken on a 2-core machine shared with",
        "up to 8 other agents' jobs, so seconds are noisy and pessimistic.",
        "",
        "| model | loss | selected on | test protocol | NDCG@10 | HR@10 | MRR@10 | AUC | epochs (best) | s/epoch | train wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    protocols: dict[str, str] = {}
    for row in rows:
        selected = "sampled-100 val" if "full" not in row else "full val"
        still = ", still improving" if row["best_epoch"] + 1 == row["epochs"] else ""
        for protocol in ("full", "full_unmasked", "sampled"):
            if protocol not in row:
                continue
            r = row[protocol]
            protocols[f"{row['model']}/{protocol}"] = protocol_tuple(row[f"{protocol}_protocol"])
            lines.append(
                f"| {row['model']} | {row[f'{protocol}_protocol'].get('loss', '')} | {selected} | {protocol} "
                f"| {r['NDCG@10']:.4f} | {r['HR@10']:.4f} | {r['MRR@10']:.4f} | {r['AUC']:.4f} "
                f"| {row['epochs']} ({row['best_epoch'] + 1}{still}) | {row['seconds_per_epoch']:.1f} | {row['train_wall_s']:.0f} "
                f"| {row['peak_rss_mib']:.0f} |"
            )
    ref = REFERENCE
    lines += [
        f"| RecBole 1.2.1 SASRec (reference) | ce | full val | full | {ref['NDCG@10']:.4f} | {ref['HR@10']:.4f} "
        f"| {ref['MRR@10']:.4f} | | 20 | ~{ref['seconds/epoch']:.0f} | ~{ref['minutes'] * 60} | |",
        "",
        "Protocol tuples:",
        "",
    ]
    lines += [f"- `{key}`: {value}" for key, value in protocols.items()]
    lines += [
        "",
        "Notes:",
        "",
        "- Training is time-boxed (`max_time`); s/epoch counts training only, train wall s includes the",
        "  per-epoch validation. The test figure is that of the epoch with the best validation NDCG@10.",
        "- `full` masks the user's already-seen items; `full_unmasked` leaves them rankable, which is",
        "  RecBole 1.2.1's protocol for sequential models (its `FullSortEvalDataLoader` builds the history",
        "  mask only when the model type is not sequential), so `full_unmasked` is the row to compare with",
        "  the reference. Ties rank pessimistically in both.",
        "- SASRec against the reference, same protocol (`full_unmasked`): test NDCG@10 0.0601 after 240 s",
        "  (1 thread) vs RecBole's 0.0636 after ~50 minutes — 5 % short, a gap smaller than the test set's",
        "  sampling noise (a 943-user NDCG@10 mean has a standard error of about 0.006), so the target",
        "  (>= 0.0636 within 5 minutes) is not demonstrated. SASRec here uses RecBole's dropout 0.5 on",
        "  hidden states and attention and its 256-wide feed-forward, lr 2e-3. An epoch costs 5 s instead",
        "  of ~150 s because all-position training over non-overlapping 50-item windows sees each",
        "  next-item example once, where RecBole feeds every prefix as its own sequence. What would close",
        "  the gap: a longer budget (validation NDCG was still rising slowly) or seed averaging.",
        "  With seen items masked (`full`) the same checkpoint scores 0.0984.",
        "- Sampled-protocol figures (target + 100 uniform unseen items) are not comparable with full",
        "  ranking. DIN and BST are only evaluated that way: they run a network per (user, item) pair, and",
        "  one full-ranking pass over ML-100K's 943 x 1682 pairs costs about 2 TFLOP for DIN (activation",
        "  unit over 50 behaviours) and about 10 TFLOP for BST (51-token transformer + 3 MFLOP MLP per pair).",
        "- DIN trains on 8 and BST on 4 sampled positions per 50-item window (`train_positions`), so one",
        "  of their epochs sees about 1/6 and 1/12 of the next-item examples an SASRec epoch sees.",
        "- \"still improving\": the best validation epoch was the last one when the time budget ran out, so",
        "  the figure is a lower bound; a longer `--budget` (or a quiet machine) is what would raise it.",
        "",
        f"<!-- rows: {json.dumps(rows)} -->",
        "",
    ]
    return "\n".join(lines)


def previous_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = re.search(r"<!-- rows: (.*) -->", path.read_text())
    return json.loads(found.group(1)) if found else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="sasrec,din,bst")
    parser.add_argument("--budget", type=int, default=0, help="training seconds per model (default: sasrec 300, din/bst 180)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a second thread only waits on a shared machine)")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "attnrec-ecommerce-bench"), help="checkpoint folder")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one model, in a child process
    args = parser.parse_args()
    if args.run:
        print("RESULT " + json.dumps(run_one(args.run, args.budget or BUDGETS[args.run], args.threads, args.data, args.root)))
        return
    out = Path(args.out)
    rows = {row["model"]: row for row in previous_rows(out)}
    shown = "nice python benchmarks/ecommerce_ml100k.py " + " ".join(sys.argv[1:])
    for name in args.models.split(","):
        command = [sys.executable, __file__, "--run", name, "--threads", str(args.threads), "--data", args.data,
                   "--root", args.root, "--budget", str(args.budget or BUDGETS[name])]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True)
        result = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode or not result:
            sys.stderr.write(output.stderr[-4000:])
            raise SystemExit(f"{name} failed (exit {output.returncode})")
        rows[name] = json.loads(result[0][len("RESULT "):]) | {"command": shown.strip()}
        print(json.dumps(rows[name], indent=1), flush=True)
    text = markdown(sorted(rows.values(), key=lambda row: (row["model"].split("-")[0] not in BUDGETS, row["model"])))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
