"""SASRec on the S3-Rec repository's Amazon sets (short histories): length-aware vs fixed-width
batching, and test quality against the published table.

Data: ``../shared/data/amazon_s3rec/{Toys_and_Games,Sports_and_Outdoors}.txt`` (one line per
user, ``uid i1 i2 ...`` in time order; read by ``attnrec.data.UserSequencesDataModule``).
Protocol (the S3-Rec table's): leave-one-out (last item test, second-to-last validation), full
ranking over all items with the user's training items masked, HR@10 / NDCG@10. Model: SASRec,
full-softmax cross-entropy, dim 64, 2 layers, 2 heads, max_len 50, dropout 0.2, lr 1e-3, batch
256 windows.

Part 1 (speed, one process, one seed, both paths in the same run so the ratio is fair): a
training epoch and a validation pass with ``batching="fixed"`` (every history padded to 50) and
``batching="length"`` (padded to the batch's longest, windows grouped by length); the second
and third epochs and the second validation pass of each are timed (the first warms caches), and
the seconds an epoch spends in the catalogue softmax alone, the floor no batching goes below.
Part 2 (quality): length-aware SASRec trained under a wall-clock budget, validated every epoch;
whenever validation NDCG@10 improves, the test set is scored too, so the curve is "test metric
of the best-validation model so far against training wall time". Standard errors are of the
test mean over users.

    OMP_NUM_THREADS=2 python benchmarks/sequential_amazon.py --sets Toys_and_Games,Sports_and_Outdoors --minutes 5
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_s3rec"
ML100K = DATA.parent / "ml-100k" / "ml-100k.inter"
RESULTS = Path(__file__).parent / "results" / "sequential.md"
PEER_RESULTS = Path(__file__).parent / "results" / "peer.md"
PROTOCOL = """Data: `../shared/data/amazon_s3rec/{Toys_and_Games,Sports_and_Outdoors}.txt` (one line per user,
items in time order; `attnrec.data.UserSequencesDataModule`). Protocol (the S3-Rec table's):
leave-one-out (last item test, second-to-last validation), full ranking over all items with the
user's training items masked, HR@10 / NDCG@10. Model: SASRec, full-softmax cross-entropy, dim 64,
2 layers, 2 heads, max_len 50, AdamW, 256 windows per batch; dropout 0.2 and a constant lr 1e-3
unless a quality run says otherwise (`--dim`, `--dropout`, `--lr`, `--schedule cosine` decaying
over `--epochs`).
Speed: the second and third training epochs and the second validation pass of each batching,
same process and seed, and the seconds of an epoch spent in the catalogue softmax alone (random
user vectors, as many as the batches have targets: the floor no batching goes below).
Quality: length-aware batching under a wall-clock budget, validated every epoch; the test set is
scored whenever validation NDCG@10 improves (± is the standard error of the test mean over users)."""
PUBLISHED = {  # S3-Rec repository table (all_rank.PNG): HR@10, NDCG@10
    "Toys_and_Games": {"SASRec": (0.0675, 0.0374), "S3-Rec": (0.0700, 0.0376)},
    "Sports_and_Outdoors": {"SASRec": (0.0350, 0.0192), "S3-Rec": (0.0385, 0.0204)},
}


def datamodule(name: str, batching: str, mask_seen: bool = True, negatives: int = 0, shared: bool = False) -> Any:
    from attnrec.data import MovieLensDataModule, UserSequencesDataModule

    if name == "ml-100k":  # the peer part only: the ML-100K benchmark's batches
        return MovieLensDataModule(path=str(ML100K), max_len=50, batch_size=128, batching=batching, seed=0,
                                   eval_mask_seen=mask_seen)  # fmt: skip
    return UserSequencesDataModule(path=str(DATA / f"{name}.txt"), max_len=50, batch_size=256, eval_batch_size=512,
                                   batching=batching, seed=0, eval_mask_seen=mask_seen, num_negatives=negatives,
                                   shared_negatives=shared)  # fmt: skip


def model(data: Any, lr: float = 1e-3, dropout: float = 0.2, schedule: str = "constant", dim: int = 64, **extra: Any) -> Any:
    from attnrec_ecommerce import SASRec

    return SASRec(data.catalog, dim=dim, num_layers=2, num_heads=2, dropout=dropout, lr=lr, max_len=50,
                  metrics=("HR", "NDCG"), ks=(10,), schedule=schedule, **extra)  # fmt: skip


def trainer(**kwargs: Any) -> Any:
    import lightning as L

    base = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, accelerator="cpu", devices=1)  # fmt: skip
    return L.Trainer(**(base | kwargs))


def padding(data: Any) -> tuple[int, int]:
    """Real and padded history positions over one pass of the training loader."""
    real = total = 0
    for batch in data.train_dataloader():
        real += int((batch["history"] != 0).sum())
        total += batch["history"].numel()
    return real, total


def speed(name: str) -> list[dict[str, Any]]:
    import lightning as L

    rows = []
    for batching in ("fixed", "length"):
        L.seed_everything(0, verbose=False)
        data = datamodule(name, batching)
        data.setup("fit")
        net = model(data)
        trainer(max_epochs=1, limit_val_batches=0).fit(net, data)  # warm-up epoch
        fit = trainer(max_epochs=2, limit_val_batches=0)
        start = time.perf_counter()
        fit.fit(net, data, ckpt_path=None)
        # a fresh Trainer trains 2 more epochs; time per epoch is the mean of those
        epoch = (time.perf_counter() - start) / 2
        trainer().validate(net, data, verbose=False)  # warm-up pass, as for training
        start = time.perf_counter()
        trainer().validate(net, data, verbose=False)
        validation = time.perf_counter() - start
        real, total = padding(data)
        rows.append({"batching": batching, "epoch_s": epoch, "validation_s": validation, "real": real, "padded": total,
                     "softmax_s": softmax_floor(net, data)})  # fmt: skip
        print(json.dumps({"set": name, **rows[-1]}), flush=True)
    return rows


def softmax_floor(net: Any, data: Any) -> float:
    """Seconds an epoch spends in the catalogue softmax alone: for each training batch, the loss
    of as many random user vectors as the batch has targets against the item table, forward and
    backward, as training computes it. Batching cannot go below it: only real positions are scored."""
    import torch
    from attnrec.losses import catalog_cross_entropy

    table = net.item_encoder.embedding.weight
    allowed = torch.ones(table.shape[0], dtype=torch.bool)
    allowed[0] = False
    seconds = 0.0
    for batch in data.train_dataloader():
        positive = batch["target"][batch["target"] != 0]
        users = torch.randn(len(positive), table.shape[1], requires_grad=True)
        start = time.perf_counter()
        catalog_cross_entropy(users, table, positive, allowed).mean().backward()  # what training runs
        seconds += time.perf_counter() - start
    table.grad = None
    return seconds


def per_user(net: Any, data: Any) -> tuple[list[float], list[float]]:
    """HR@10 and NDCG@10 of every test list (one target each)."""
    import torch

    hits, gains = [], []
    net.eval()
    with torch.no_grad():
        for batch in data.test_dataloader():
            hit, gain = hit_and_gain(net.rank(batch).ranks[:, 0])
            hits += hit
            gains += gain
    return hits, gains


def hit_and_gain(ranks: Any) -> tuple[list[float], list[float]]:
    """HR@10 and NDCG@10 of each one-target list from its target's 1-based rank (a tensor)."""
    import torch

    ranks = ranks.double()
    return (ranks <= 10).double().tolist(), torch.where(ranks <= 10, 1.0 / torch.log2(ranks + 1.0), 0.0).tolist()


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def quality(name: str, minutes: float, lr: float = 1e-3, dropout: float = 0.2, epochs: int = 10_000,
            schedule: str = "constant", mask_seen: bool = True, negatives: int = 0, shared: bool = False,
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    import lightning as L

    L.seed_everything(0, verbose=False)
    data = datamodule(name, "length", mask_seen, negatives, shared)
    data.setup("fit")
    net = model(data, lr, dropout, schedule, **extra)
    curve: list[dict[str, float]] = []
    best = {"val": -1.0}
    epoch_s: list[float] = []
    start = time.perf_counter()

    class TestOnImprovement(L.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.began = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:  # after the epoch's validation
            epoch_s.append(time.perf_counter() - self.began)

        def on_validation_end(self, trainer: Any, module: Any) -> None:  # after the module logged its metrics
            value = float(trainer.callback_metrics["val/NDCG@10"])
            wall = time.perf_counter() - start
            if value > best["val"] and wall <= minutes * 60:  # a validation ending after the budget does not count
                hits, gains = per_user(module, data)
                module.train()
                best.update(val=value, epoch=trainer.current_epoch, hr=mean_se(hits), ndcg=mean_se(gains), wall=wall)
                curve.append({"epoch": trainer.current_epoch, "wall_s": round(wall, 1), "val_NDCG@10": value,
                              "test_HR@10": best["hr"][0], "test_NDCG@10": best["ndcg"][0]})  # fmt: skip
                print(json.dumps({"set": name, **curve[-1]}), flush=True)

    fit = trainer(max_time={"minutes": minutes}, max_epochs=epochs, callbacks=[TestOnImprovement()])
    fit.fit(net, data)
    return {"set": name, "minutes": minutes, "lr": lr, "dropout": dropout, "schedule": schedule, "epochs": fit.current_epoch, "best": best, "curve": curve,
            "users": data.num_users, "items": data.num_items, "seconds_per_epoch": epoch_s, "negatives": negatives, "shared": shared,
            **extra}  # fmt: skip


# attnrec's side of the ML-100K comparison: the ML-100K benchmark's SASRec (RecBole's dropout 0.5
# on hidden states and attention, feed-forward 256, lr 2e-3; benchmarks/ecommerce_ml100k.py)
ML100K_MODEL = dict(lr=2e-3, dropout=0.5, attention_dropout=0.5, ffn_dim=256, schedule="constant", epochs=10_000)


def peer(name: str, minutes: float, threads: int, python: str, batch_size: int, **ours: Any) -> dict[str, Any]:
    """RecBole's SASRec (in its own venv, a subprocess, alone) and then attnrec's, each under the
    same wall-clock budget and RecBole's protocol (seen items rankable)."""
    import os
    import subprocess
    import tempfile

    source = ["--inter", str(ML100K)] if name == "ml-100k" else ["--lines", str(DATA / f"{name}.txt")]
    command = [python, str(Path(__file__).with_name("recbole_peer.py")), *source, "--minutes", str(minutes),
               "--threads", str(threads), "--batch-size", str(batch_size)]  # fmt: skip
    env = os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as errors:
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        lines = []
        for line in run.stdout:  # type: ignore[union-attr]
            print(f"recbole {name}: {line.rstrip()}", flush=True)
            lines.append(line)
        if run.wait():
            errors.seek(0)
            raise SystemExit(f"RecBole run failed ({' '.join(command)}):\n{errors.read()[-4000:]}")
    recbole = json.loads(lines[-1]) | {"batch_size": batch_size}
    if name == "ml-100k":
        ours = ours | ML100K_MODEL
    attnrec = quality(name, minutes, mask_seen=False, **ours)
    return {"set": name, "minutes": minutes, "threads": threads, "recbole": recbole, "attnrec": attnrec}


def peer_report(results: list[dict[str, Any]]) -> str:
    lines = [
        "## Side by side with RecBole 1.2.1's SASRec (same wall-clock budget, RecBole's protocol)",
        "",
        "Protocol (RecBole's for sequential models): leave-one-out by time, full ranking with the user's seen",
        "items left rankable (RecBole masks no history for sequential models), HR@10 / NDCG@10 of the",
        "best-validation epoch; an epoch counts only if its validation ended within the budget, and the",
        "budget includes validation and test scoring. Both sides: CE over the whole catalogue, 2 layers,",
        "2 heads, hidden 64, max length 50, one process on the same 2 cores, one after the other, nothing",
        "else running. RecBole (`benchmarks/recbole_peer.py`, its own venv: numpy<2, setuptools<81,",
        "`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`) at its SASRec defaults (feed-forward 256, dropout 0.5, Adam",
        "lr 1e-3), every prefix of a training sequence its own example; attnrec as its row says, every",
        "training window scored at all its positions. ± is the standard error of the test mean over users.",
        "",
        "| set | framework | settings | HR@10 | NDCG@10 | best epoch / epochs in budget | s per epoch¹ | budget min |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for result in results:
        rb, ours = result["recbole"], result["attnrec"]
        rows = [("RecBole 1.2.1 SASRec", f"batch {rb['batch_size']}, dropout 0.5, ffn 256, lr 1e-3", rb),
                ("attnrec SASRec", f"length-aware, dropout {ours['dropout']:g}"
                 + (f", attention dropout {ours['attention_dropout']:g}" if "attention_dropout" in ours else "")
                 + f", ffn {ours.get('ffn_dim') or 64}, lr {ours['lr']:g} {ours['schedule']}", ours)]  # fmt: skip
        for label, settings, side in rows:
            best, epochs = side["best"], side["seconds_per_epoch"]
            if "hr" not in best:
                metrics = "no epoch within the budget | –"
            else:
                metrics = f"{best['hr'][0]:.4f} ± {best['hr'][1]:.4f} | {best['ndcg'][0]:.4f} ± {best['ndcg'][1]:.4f}"
            at = f"{best['epoch'] + 1} / {side['epochs']}" if "epoch" in best else f"– / {side['epochs']}"
            lines.append(f"| {result['set']} | {label} | {settings} | {metrics} | {at} | "
                         f"{sum(epochs) / max(1, len(epochs)):.1f} | {result['minutes']:g} |")  # fmt: skip
    lines += ["", "¹ RecBole: training only; attnrec: training plus the epoch's validation and, when it improved, the",
              "test scoring (Lightning's epoch hooks enclose both), so attnrec's figure is the larger by construction.",
              "", "Commands (2 CPU cores; `<venv>` holds recbole==1.2.1, see `benchmarks/recbole_peer.py`):", ""]
    lines += [f"- {result['set']}: `{result['command']}`" for result in results]
    lines += ["", "Time to quality (test NDCG@10 of the best-validation model so far, wall seconds):", ""]
    for result in results:
        for label, side in (("RecBole", result["recbole"]), ("attnrec", result["attnrec"])):
            points = ", ".join(f"{p['wall_s']:.0f} s: {p['test_NDCG@10']:.4f}" for p in side["curve"]) or "none"
            lines.append(f"- {result['set']}, {label}: {points}")
    lines += ["", f"<!-- results: {json.dumps(results)} -->"]
    return "\n".join(lines) + "\n"


def report(speeds: dict[str, list[dict[str, Any]]], results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "## Short-history sequences: Amazon Toys and Sports (S3-Rec's files)",
        "",
        PROTOCOL,
        "",
        f"Command: `{command}` (2 CPU cores, nothing else running).",
        "",
        "### Length-aware vs fixed-width batching (same run, same seed)",
        "",
        "| set | batching | training epoch s | of which the catalogue softmax s | validation s | real / padded history positions |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, rows in speeds.items():
        for row in rows:
            share = f"{row['real']:,} / {row['padded']:,} ({row['real'] / row['padded']:.0%})"
            lines.append(f"| {name} | {row['batching']} | {row['epoch_s']:.1f} | {row['softmax_s']:.1f} | "
                         f"{row['validation_s']:.2f} | {share} |")  # fmt: skip
        fixed, length = rows
        lines.append(f"| {name} | **speed-up** | **{fixed['epoch_s'] / length['epoch_s']:.1f}x** | | "
                     f"**{fixed['validation_s'] / length['validation_s']:.1f}x** | |")  # fmt: skip
    lines += ["", "### Test quality (best validation epoch within the budget) vs the published table", "",
              "| set | model | HR@10 | NDCG@10 | epochs | train minutes |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for result in results:
        name, best = result["set"], result["best"]
        for reference, (hr, ndcg) in PUBLISHED[name].items():
            lines.append(f"| {name} | {reference} (published) | {hr:.4f} | {ndcg:.4f} | – | – |")
        lines.append(
            f"| {name} | attnrec SASRec, {loss_label(result)}, length-aware, dim {result.get('dim', 64)}, lr {result['lr']:g} {result['schedule']}, dropout {result['dropout']:g} | {best['hr'][0]:.4f} ± {best['hr'][1]:.4f} | "
            f"{best['ndcg'][0]:.4f} ± {best['ndcg'][1]:.4f} | {best['epoch'] + 1} of {result['epochs']} | "
            f"{result['minutes']:g} |"
        )
    lines += ["", "Time to quality (test metric of the best-validation model so far):", ""]
    for result in results:
        points = ", ".join(f"{p['wall_s']:.0f} s: {p['test_NDCG@10']:.4f}" for p in result["curve"])
        lines.append(f"- {result['set']} NDCG@10 — {points}")
    return "\n".join(lines) + "\n"


def loss_label(result: dict[str, Any]) -> str:
    loss = result.get("loss", "CrossEntropyLoss")
    if loss == "CrossEntropyLoss":
        return "CE"
    return f"{loss} with {result['negatives']} uniform negatives " + ("shared by the batch" if result.get("shared") else "per position")


def main() -> None:
    import sys

    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="Toys_and_Games,Sports_and_Outdoors")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per set (part 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the quality runs")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout of the quality runs")
    parser.add_argument("--dim", type=int, default=64, help="embedding size of the quality runs")
    parser.add_argument("--schedule", default="constant", help="lr schedule of the quality runs: constant or cosine")
    parser.add_argument("--epochs", type=int, default=10_000, help="epoch limit of the quality runs (cosine decays over it)")
    parser.add_argument("--loss", default="CrossEntropyLoss", help="loss of the quality runs (a sampled one needs --negatives)")
    parser.add_argument("--negatives", type=int, default=0, help="uniform negatives per position of the quality runs")
    parser.add_argument("--shared", action="store_true", help="--negatives drawn once per batch for every position")
    parser.add_argument("--parts", default="speed,quality", help="speed, quality, peer (RecBole side by side; also takes the set ml-100k)")
    parser.add_argument("--recbole-python", help="python of a venv with recbole==1.2.1 (the peer part)")
    parser.add_argument("--recbole-batch-size", type=int, default=2048, help="RecBole's training batch (its default 2,048)")
    parser.add_argument("--out", default=None, help=f"results page (default {RESULTS}, or {PEER_RESULTS} for the peer part)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.sets.split(",")
    parts = args.parts.split(",")
    command = "python benchmarks/sequential_amazon.py " + " ".join(sys.argv[1:])
    if "peer" in parts:
        if not args.recbole_python:
            raise SystemExit("--parts peer needs --recbole-python: a venv with recbole==1.2.1, numpy<2, setuptools<81")
        out = Path(args.out or PEER_RESULTS)
        # the page keeps every set's last result, so sets with different budgets run as separate commands
        kept = {r["set"]: r for r in json.loads(out.read_text().split("<!-- results: ")[1].split(" -->")[0])} if out.exists() else {}
        for name in names:
            result = peer(name, args.minutes, args.threads, args.recbole_python, args.recbole_batch_size, lr=args.lr,
                          dropout=args.dropout, epochs=args.epochs, schedule=args.schedule)  # fmt: skip
            kept[name] = result | {"command": command.replace(args.recbole_python, "<venv>/bin/python")}
            out.write_text(peer_report(list(kept.values())))
        print(out.read_text())
        print(f"wrote {out}")
        return
    speeds = {name: speed(name) for name in names} if "speed" in parts else {}
    results = [quality(name, args.minutes, args.lr, args.dropout, args.epochs, args.schedule, dim=args.dim,
                       loss=args.loss, negatives=args.negatives, shared=args.shared)
               for name in names] if "quality" in parts else []  # fmt: skip
    text = report(speeds, results, command)
    print(text)
    Path(args.out or RESULTS).write_text(text)
    print(f"wrote {args.out or RESULTS}")


if __name__ == "__main__":
    main()
