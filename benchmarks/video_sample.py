"""Id-only vs multimodal item encoders on the bundled video sample: warm and cold items.

Protocol: VideoSampleDataModule (800 users, 400 videos, 10 content clusters, generator seed 0),
10% of the videos held out of training and validation as cold items; leave-one-out by time on
the rest; full ranking of all 400 videos with seen videos masked; CE loss weighted by watch
ratio (clipped to [0, 2]), cold videos left out of the training softmax; TransformerUserEncoder
(1 layer, 2 heads, max length 30), dim 64, AdamW lr 3e-3 with cosine decay, batch 128, fixed
epoch count (no early stopping; validation is not used for selection). "warm" test lists ask for
each user's last warm video; "cold" lists for the held-out videos the user watched (several
targets per list). Each model runs in its own process, so peak RSS (ru_maxrss) is its own.

Usage:

    python benchmarks/video_sample.py                   # writes benchmarks/results/video.md
    python benchmarks/video_sample.py --epochs 5 --out -  # quick look, print only
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("random", "popularity", "IdItemEncoder", "MultimodalItemEncoder")
VIDEO_FILES = ("small_matrix.csv", "big_matrix.csv", "MicroLens-100k_pairs.csv", "MicroLens-50k_pairs.csv")


def _measure(model_name: str, epochs: int, seed: int, threads: int) -> dict:
    import functools
    import logging
    import warnings

    import lightning as L
    import torch

    from attnrec.encoders import IdItemEncoder, TransformerUserEncoder
    from attnrec.evaluation import evaluate_popularity
    from attnrec_video import MultimodalItemEncoder, VideoRecommender, VideoSampleDataModule

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    dm = VideoSampleDataModule(seed=seed)
    results: dict = {"model": model_name}
    if model_name == "popularity":
        for items in ("warm", "cold"):
            dm.test_items = items  # type: ignore[assignment]
            results[items] = evaluate_popularity(dm, "test", metrics=("HR", "NDCG"), ks=(10,))
        return results
    if model_name == "random":
        for items in ("warm", "cold"):
            dm.test_items = items  # type: ignore[assignment]
            results[items] = {"HR@10": _chance_hr(dm, 10)}
        return results

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:  # type: ignore[no-untyped-def]
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:  # type: ignore[no-untyped-def]
            self.seconds.append(time.perf_counter() - self.start)

    L.seed_everything(seed, verbose=False)
    encoder = {"IdItemEncoder": IdItemEncoder, "MultimodalItemEncoder": MultimodalItemEncoder}[model_name]
    model = VideoRecommender(
        dm.catalog, dim=64, item_encoder=encoder,
        user_encoder=functools.partial(TransformerUserEncoder, max_len=30, num_layers=1, dropout=0.2),
        lr=3e-3, ks=(10,), metrics=("HR", "NDCG"),
    )  # fmt: skip
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, dm)
    for items in ("warm", "cold"):
        dm.test_items = items  # type: ignore[assignment]
        trainer.test(model, dm, verbose=False)
        results[items] = model.test_results
    results["seconds_per_epoch"] = sorted(timer.seconds)[len(timer.seconds) // 2]  # median: first epoch warms up
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        results["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    results["protocol"] = dm.protocol | {"loss": model.protocol.get("loss", "ce")}
    return results


def _chance_hr(dm, k: int) -> float:  # type: ignore[no-untyped-def]
    """Expected HR@k of a uniformly random ranking of the same lists: 1 - C(n - t, k) / C(n, k)."""
    import math

    total, lists = 0.0, 0
    for batch in dm.test_dataloader():
        for targets, seen in zip(batch["targets"], batch["seen"]):
            t, n = int((targets != 0).sum()), dm.num_items - len(set(seen.tolist()) - {0})
            total, lists = total + 1 - math.comb(n - t, k) / math.comb(n, k), lists + 1
    return total / lists


def _shared_video_data() -> list[str]:
    shared = ROOT.parent / "shared" / "data"
    return sorted(str(p) for name in VIDEO_FILES for p in shared.rglob(name)) if shared.exists() else []


def _cell(results: dict, name: str) -> str:
    return f"{results[name]:.3f}" if name in results else "-"


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | warm HR@10 | warm NDCG@10 | cold HR@10 | cold NDCG@10 | cold WatchNDCG@10 | s/epoch | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w, c = r["warm"], r["cold"]
        cells = [
            r["model"], f"{w['HR@10']:.3f}", _cell(w, "NDCG@10"), f"{c['HR@10']:.3f}", _cell(c, "NDCG@10"),
            _cell(c, "WatchNDCG@10"),
            f"{r['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in r else "-",
            f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small models: 1 is fastest)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video.md"), help="'-' prints only")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        print(json.dumps(_measure(args._one, args.epochs, args.seed, args.threads)))
        return
    rows = []
    for name in MODELS:
        done = subprocess.run(
            [sys.executable, __file__, "--_one", name, "--epochs", str(args.epochs), "--seed", str(args.seed),
             "--threads", str(args.threads)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name}: done", file=sys.stderr)
    trained = next(r for r in rows if "device" in r)
    protocol = ", ".join(f"{k}={v}" for k, v in trained["protocol"].items() if k != "items")
    command = "python benchmarks/video_sample.py" + (f" --epochs {args.epochs}" if args.epochs != 30 else "") + (
        f" --threads {args.threads}" if args.threads != 1 else ""
    )
    shared = _shared_video_data()
    lines = [
        "## Video plugin: id-only vs multimodal on the bundled sample (warm and cold videos)",
        "",
        f"Command: `{command}` ({args.epochs} epochs, seed {args.seed}; device: {trained['device']}, "
        f"{platform.machine()}, Python {platform.python_version()}).",
        "",
        f"Protocol: {protocol}; 10% of the videos held out of training and validation as cold. Warm lists rank "
        "each user's last warm video; cold lists rank the held-out videos the user watched (several targets per "
        "list). `random` is the expected HR@10 of a uniformly random ranking of the same lists; popularity ranks "
        "cold videos last (no training interactions). Seconds per epoch are the median epoch, peak RSS the whole "
        "process. Timings were taken on a 2-core machine shared with other jobs: they are noisy.",
        "",
        *_table(rows),
        "",
        "Other video data: " + (", ".join(shared) if shared else
                                "none in `../shared/data` (it holds ml-100k and gowalla only), so only the "
                                "bundled sample is measured; KuaiRec/MicroLens runs need the downloads."),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
