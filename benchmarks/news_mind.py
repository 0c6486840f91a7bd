"""NRMS and NRMS + a pretrained-language-model news encoder under MIND's protocol.

Reports per-impression AUC, MRR, nDCG@5 and nDCG@10 averaged over the test impressions (MIND's
official scorer), seconds per training epoch and peak memory, with the protocol tuple.

    python benchmarks/news_mind.py                          # the bundled sample (offline)
    python benchmarks/news_mind.py --path /data/MINDsmall   # a folder with train/ and dev/
    python benchmarks/news_mind.py --version demo           # downloads MIND-demo once

The NRMS settings follow Microsoft Recommenders' MIND-demo run where this framework allows:
title length 30, history 50, npratio 4, batch 32; word embeddings are learned from scratch
(no GloVe), so published figures are a reference, not a target this script can claim to match.
"""

from __future__ import annotations

import argparse
import resource
import time
from functools import partial
from typing import Any

import lightning as L
import torch

from attnrec_news import NRMS, MINDDataModule, NRMSNewsEncoder, NRMSUserEncoder, PLMNewsEncoder
from attnrec.evaluation import evaluate_popularity

METRICS = ("AUC", "MINDMRR", "NDCG@5", "NDCG@10")


class EpochTimer(L.Callback):
    """Wall-clock seconds of each training epoch (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def peak_memory_mib(accelerator: str) -> float:
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(name: str, datamodule: MINDDataModule, args: argparse.Namespace) -> dict[str, Any]:
    L.seed_everything(args.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if name == "NRMS":
        item_encoder: Any = partial(NRMSNewsEncoder, num_heads=args.heads, dropout=args.dropout)
    else:
        item_encoder = partial(PLMNewsEncoder, model_name=args.plm, finetune_layers=args.finetune_layers,
                               max_tokens=args.title_length + 2)  # fmt: skip
    model = NRMS(datamodule.catalog, dim=args.dim, lr=args.lr, item_encoder=item_encoder,
                 user_encoder=partial(NRMSUserEncoder, num_heads=args.heads, dropout=args.dropout))  # fmt: skip
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer])  # fmt: skip
    trainer.fit(model, datamodule)
    results = trainer.test(model, datamodule, verbose=False)[0]
    row = {m: results[f"test/{m}"] for m in METRICS}
    row |= {"s/epoch": sum(timer.seconds) / len(timer.seconds), "peak MiB": peak_memory_mib(args.accelerator)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", help="MIND-format folder with train/ and dev/ (default: the bundled sample)")
    parser.add_argument("--version", choices=("demo", "small", "large"), help="download this MIND version once")
    parser.add_argument("--models", default="NRMS,NRMS+PLM", help="comma-separated: NRMS, NRMS+PLM")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--title_length", type=int, default=30)
    parser.add_argument("--npratio", type=int, default=4)
    parser.add_argument("--plm", default=None, help="hub id or folder (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--finetune_layers", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample_users", type=int, default=500)
    parser.add_argument("--sample_news", type=int, default=900)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    datamodule = MINDDataModule(
        path=args.path, version=args.version, max_len=args.max_len, title_length=args.title_length,
        npratio=args.npratio, batch_size=args.batch_size, sample_users=args.sample_users,
        sample_news=args.sample_news,
    )  # fmt: skip
    datamodule.setup("fit")
    rows = {"most popular": evaluate_popularity(datamodule, "test", ("AUC", "MINDMRR", "NDCG"), (5, 10))}
    for name in args.models.split(","):
        if name not in ("NRMS", "NRMS+PLM"):
            raise SystemExit(f"unknown model {name!r}; choose NRMS, NRMS+PLM")
        rows[name] = run(name, datamodule, args)
    protocol = ", ".join(f"{k}={v}" for k, v in datamodule.protocol.items())
    print(f"\nprotocol: {protocol}, loss=SampledSoftmaxLoss (1 click + {args.npratio} impression negatives)")
    print(f"settings: epochs={args.epochs}, dim={args.dim}, heads={args.heads}, lr={args.lr}, batch={args.batch_size}, "
          f"threads={torch.get_num_threads()}, accelerator={args.accelerator}\n")  # fmt: skip
    columns = [*METRICS, "s/epoch", "peak MiB"]
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.4f}" if c in METRICS else (f"{row[c]:.1f}" if c in row else "–") for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
