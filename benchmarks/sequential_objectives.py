"""Seconds of a SASRec training epoch under each objective, in one process: the full softmax
(``CrossEntropyLoss``, the chunked catalogue path) against ``SampledSoftmaxLoss`` with K uniform
negatives shared by the batch (``shared_negatives=True``). Same data, model and batches as
``sequential_amazon.py`` (length-aware, dim 64, 2 layers, 256 windows per batch); no validation.
Each objective trains 2 epochs from scratch, the objectives alternate, and the whole round runs
twice; the second round's epochs are the figures (the first warms caches).

    OMP_NUM_THREADS=2 python benchmarks/sequential_objectives.py --sets Toys_and_Games --negatives 2048,4096
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sequential_amazon import datamodule, model, trainer


def epochs(name: str, negatives: int) -> list[float]:
    import lightning as L

    L.seed_everything(0, verbose=False)
    data = datamodule(name, "length", True, negatives, negatives > 0)
    data.setup("fit")
    net = model(data, 3e-3, 0.2, "constant", loss="SampledSoftmaxLoss" if negatives else "CrossEntropyLoss")
    seconds: list[float] = []

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.began = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seconds.append(time.perf_counter() - self.began)

    trainer(max_epochs=2, limit_val_batches=0, callbacks=[Timer()]).fit(net, data)
    return seconds


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="Toys_and_Games")
    parser.add_argument("--negatives", default="2048,4096", help="shared negatives K of the sampled rows")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    objectives = [0] + [int(k) for k in args.negatives.split(",")]
    for name in args.sets.split(","):
        rounds = [{k: epochs(name, k) for k in objectives} for _ in range(2)]
        full = sum(rounds[1][0]) / 2
        for k in objectives:
            seconds = sum(rounds[1][k]) / 2
            label = "CrossEntropyLoss (full softmax)" if k == 0 else f"SampledSoftmaxLoss, {k} shared negatives"
            print(json.dumps({"set": name, "objective": label, "epoch_s": round(seconds, 2),
                              "vs_full_softmax": round(full / seconds, 2), "first_round_s": [round(s, 2) for s in rounds[0][k]]}))  # fmt: skip


if __name__ == "__main__":
    main()
