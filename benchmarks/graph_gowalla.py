"""LightGCN on Gowalla in the LightGCN authors' fixed split, within a wall-clock budget.

Protocol (the authors'): train_part00.txt + train_part01.txt (together their train.txt) and
test.txt, lines ``user item item ...`` (0-based ids); full ranking of all items with training
items masked; Recall@20 / NDCG@20 over the test users; embedding 64, 3 layers, BPR with one
uniform negative, L2 1e-4 on the batch's layer-0 embeddings. Differences from the authors'
run: attnrec batches whole user windows (``batch_size`` windows of up to ``max_len`` items,
each item a positive) instead of 2048 sampled triples, and training stops at ``--minutes``
instead of ~1000 epochs. Usage:

    nice python benchmarks/graph_gowalla.py [GOWALLA_FOLDER] [--minutes 8] [--lr 0.005]

(default folder ../shared/data/gowalla). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gowalla"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget (evaluation comes on top)")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--batch_size", type=int, default=512, help="user windows per step")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import lightning as L
    import torch

    from attnrec_graph.data import LightGCNFilesDataModule
    from attnrec_graph.model import GraphRecommender

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    start = time.perf_counter()
    data = LightGCNFilesDataModule(
        [str(folder / "train_part00.txt"), str(folder / "train_part01.txt")], str(folder / "test.txt"),
        batch_size=args.batch_size, eval_batch_size=1024,
    )  # fmt: skip
    catalog = data.catalog
    load_seconds = time.perf_counter() - start
    L.seed_everything(0)
    model = GraphRecommender(catalog, dim=64, lr=args.lr, reg=1e-4, metrics=("Recall", "NDCG"), ks=(20,))
    minutes = int(args.minutes)
    seconds = int(round((args.minutes - minutes) * 60))
    trainer = L.Trainer(
        max_epochs=-1, max_time=f"00:00:{minutes:02d}:{seconds:02d}", enable_progress_bar=False,
        enable_model_summary=False, logger=False, enable_checkpointing=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - start
    epochs = trainer.current_epoch  # completed epochs (the last one may be cut by max_time)
    steps = trainer.global_step
    start = time.perf_counter()
    results = trainer.test(model, datamodule=data, verbose=False)[0]
    print(json.dumps({
        "model": "lightgcn",
        "users": catalog.num_users, "items": catalog.num_items, "train_interactions": int(catalog.train_edges.shape[1]),
        "Recall@20": results["test/Recall@20"], "NDCG@20": results["test/NDCG@20"],
        "epochs": epochs, "steps": steps, "train_seconds": train_seconds,
        "sec_per_step": train_seconds / max(steps, 1), "eval_seconds": time.perf_counter() - start,
        "load_seconds": load_seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "protocol": model.protocol,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
