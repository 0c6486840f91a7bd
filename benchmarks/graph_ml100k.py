"""Graph models on MovieLens-100K: LightGCN, graph attention (bilinear, GATv2), KG attention.

Protocol: ml-100k.inter (943 users, 1,682 items, 100,000 ratings, all kept as implicit
feedback), a seeded random 80/20 split per user (no validation set; fixed epoch budget, no
early stopping), full ranking of every item with the user's training items masked,
Recall@20 / NDCG@20; embedding 64, 3 propagation layers, BPR with one uniform negative per
positive, Adam. The KG model reads RecBole's ml-100k.kg + ml-100k.link. Each model runs in its
own process so its peak RSS (ru_maxrss, whole process incl. ~0.5 GB of Python + torch) is its
own. Usage:

    nice python benchmarks/graph_ml100k.py [ML_100K_FOLDER] [--epochs 60] [--models lightgcn,...]

(default folder ../shared/data/ml-100k). Prints one JSON line per model and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
MODELS = ("popularity", "lightgcn", "bilinear", "gatv2", "kg_residual", "kg_bi_interaction")
COLUMNS = {"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"}


def _data(folder: Path, kg: bool):
    from attnrec.data import InteractionDataModule

    from attnrec_graph.data import KGDataModule

    common = dict(
        path=str(folder / "ml-100k.inter"), columns=COLUMNS, split="ratio", val_ratio=0.0, test_ratio=0.2,
        batch_size=128, eval_batch_size=512, num_negatives=1, seed=0,
    )  # fmt: skip
    if kg:
        return KGDataModule(str(folder / "ml-100k.kg"), str(folder / "ml-100k.link"), **common)
    return InteractionDataModule(**common)


def run_one(name: str, folder: Path, epochs: int, lr: float, threads: int) -> dict:
    import functools

    import lightning as L
    import torch
    from attnrec.evaluation import evaluate_popularity

    from attnrec_graph.encoders import GraphAttentionEncoder, KGAttentionEncoder, LightGCNEncoder
    from attnrec_graph.model import GraphRecommender

    torch.set_num_threads(threads)
    data = _data(folder, kg=name.startswith("kg"))
    if name == "popularity":
        result = evaluate_popularity(data, "test", metrics=("Recall", "NDCG"), ks=(20,))
        return {"model": name, **result, "epochs": 0, "sec_per_epoch": 0.0}
    encoders = {
        "lightgcn": functools.partial(LightGCNEncoder, num_layers=3),
        "bilinear": functools.partial(GraphAttentionEncoder, num_layers=3, heads=2, attention="bilinear"),
        "gatv2": functools.partial(GraphAttentionEncoder, num_layers=3, heads=2, attention="gatv2"),
        "kg_residual": functools.partial(KGAttentionEncoder, num_layers=3, heads=2, aggregator="residual"),
        "kg_bi_interaction": functools.partial(KGAttentionEncoder, num_layers=3, heads=2, aggregator="bi-interaction"),
    }
    L.seed_everything(0)
    model = GraphRecommender(data.catalog, dim=64, item_encoder=encoders[name], lr=lr, reg=1e-4,
                             metrics=("Recall", "NDCG"), ks=(20,))  # fmt: skip
    trainer = L.Trainer(
        max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, logger=False,
        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = trainer.test(model, datamodule=data, verbose=False)[0]
    return {
        "model": name,
        "Recall@20": results["test/Recall@20"],
        "NDCG@20": results["test/NDCG@20"],
        "epochs": epochs,
        "sec_per_epoch": train_seconds / epochs,
        "eval_seconds": time.perf_counter() - start,
        "protocol": model.protocol,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: run this model, print JSON
    args = parser.parse_args()
    if args.one:
        result = run_one(args.one, Path(args.folder), args.epochs, args.lr, args.threads)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    rows = []
    for name in args.models.split(","):
        command = [sys.executable, __file__, args.folder, "--one", name, "--epochs", str(args.epochs),
                   "--lr", str(args.lr), "--threads", str(args.threads)]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True)
        line = next((x for x in output.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{name} failed:\n{output.stdout[-3000:]}\n{output.stderr[-3000:]}")
        rows.append(json.loads(line[len("RESULT "):]))
        print(line, flush=True)
    print("\n| model | Recall@20 | NDCG@20 | epochs | s/epoch | peak RSS (MB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['Recall@20']:.4f} | {r['NDCG@20']:.4f} | {r['epochs']} | "
              f"{r['sec_per_epoch']:.2f} | {r['peak_rss_mb']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
