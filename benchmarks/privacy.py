"""User-level differentially private training (``attnrec.privacy.DifferentialPrivacy``): what
privacy costs in ranking quality, and what it buys against a membership-inference attack.

Data: ML-100K (``../shared/data/ml-100k``, RecBole's atomic files, ``MovieLensDataModule``) and
Amazon Toys (``../shared/data/amazon_s3rec/Toys_and_Games.txt``, ``UserSequencesDataModule``).
Protocol: leave-one-out by time, full ranking over all items with the user's training items
masked, test NDCG@10 / HR@10 of the **last** epoch (choosing an epoch on validation would use the
users' held-out items outside the accounting). Model: the default ``Recommender`` (transformer
user encoder, 2 heads, max_len 50, no dropout, full-softmax CE; layers and dim per set, below),
Adam(W) at a constant learning rate, a fixed number of epochs. The same settings train the
private and the non-private (ε = ∞) model. Privacy: user-level DP-SGD, one window per
drawn user per step, Poisson sampling at rate ``batch / #users``, clip 1.0, δ = 1 / #users, RDP
accountant, noise calibrated to reach ε at the last step; ε = ∞ is ordinary (non-private)
training of the same model for the same epochs. Popularity: the most-popular baseline under the
same protocol (not private: it counts every user's items).

Membership inference: half of the users (seeded) are held out of training entirely; a model
trained on the other half at ε = ∞ and at ε = 8 is attacked by loss threshold — the AUC of
telling members from held-out users by the mean training loss of their windows
(``attnrec.evaluation.membership_inference_auc``; 0.5 = chance).

    python benchmarks/privacy.py --sets ml-100k,toys --epsilons 1,4,8,inf --epochs ml-100k:30,toys:10
    python benchmarks/privacy.py --quick   # a minute: ML-100K, 1 epoch, ε = 8 and ∞, no table written
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"ml-100k": ROOT / "ml-100k", "toys": ROOT / "amazon_s3rec" / "Toys_and_Games.txt"}
RESULTS = Path(__file__).parent / "results" / "privacy.md"


def datamodule(name: str, batch_size: int, held_out: float = 0.0) -> Any:
    """The set's data module; with ``held_out`` that share of users never trains (their training
    sequences are kept in ``.held_out`` for the membership probe)."""
    from attnrec.data import MovieLensDataModule, UserSequencesDataModule
    from attnrec.privacy import hold_out_users

    base = MovieLensDataModule if name == "ml-100k" else UserSequencesDataModule

    class Data(base):  # type: ignore[valid-type, misc]
        set_name = name

        def build_split(self, *args: Any) -> Any:
            split = super().build_split(*args)
            if held_out:
                split, self.held_out = hold_out_users(split, held_out, seed=0)
            return split

    return Data(path=str(SETS[name]), max_len=50, batch_size=batch_size, eval_batch_size=512, seed=0)


def train(data: Any, epsilon: float, args: argparse.Namespace, seed: int = 0) -> tuple[Any, Any]:
    """The model after ``args.epochs`` epochs, privately unless ε is infinite, and the callback."""
    import lightning as L

    from attnrec import DifferentialPrivacy, Recommender
    from attnrec.encoders import TransformerUserEncoder

    L.seed_everything(seed, verbose=False)
    data.setup("fit")
    name = data.set_name
    encoder = functools.partial(TransformerUserEncoder, num_layers=args.layers[name], max_len=50, dropout=0.0)
    prior = args.prior[name] or None
    model = Recommender(data.catalog, dim=args.dim[name], user_encoder=encoder, lr=args.lr[name], schedule="constant",
                        metrics=("HR", "NDCG"), ks=(10,), item_bias=prior is not None)  # fmt: skip
    private = (
        [DifferentialPrivacy(epsilon=epsilon, max_grad_norm=args.clip, prior_noise_multiplier=prior)]
        if math.isfinite(epsilon) else []
    )  # fmt: skip
    L.Trainer(
        max_epochs=args.epochs[data.set_name], callbacks=private, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        accelerator=args.accelerator, devices=1,
    ).fit(model, data)  # fmt: skip
    return model, (private[0] if private else None)


def test(model: Any, data: Any, args: argparse.Namespace) -> dict[str, float]:
    import lightning as L

    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator=args.accelerator, devices=1)  # fmt: skip
    return trainer.test(model, data, verbose=False)[0]


def per_user_ndcg(model: Any, data: Any) -> Any:
    """NDCG@10 of every test user, in the test loader's order (for paired differences)."""
    import torch

    from attnrec.metrics import NDCG

    model.eval()
    with torch.no_grad():
        values = []
        for batch in data.test_dataloader():
            ranking = model.rank(batch)
            values.append(NDCG()(ranking.ranks, ranking.num_relevant, ranking.num_candidates, 10))
    return torch.cat(values).double()


def paired(model: Any, reference: Any) -> tuple[float, float]:
    """Mean per-user difference and its standard error."""
    difference = model - reference
    return float(difference.mean()), float(difference.std() / math.sqrt(difference.numel()))


def quality(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from attnrec.baselines import PopularityRecommender
    from attnrec.evaluation import evaluate_popularity

    data = datamodule(name, args.batch[name])
    popularity = evaluate_popularity(data, "test", ks=(10,))
    rows = [{"model": "popularity", "NDCG@10": popularity["NDCG@10"], "HR@10": popularity["HR@10"]}]
    reference = per_user_ndcg(PopularityRecommender(data.catalog, metrics=("NDCG",), ks=(10,)), data)
    for epsilon in args.epsilons:
        start = time.perf_counter()
        runs = []
        for seed in range(args.seeds[name]):  # NDCG@10 per user averaged over the training seeds
            model, private = train(data, epsilon, args, seed)
            runs.append((test(model, data, args), per_user_ndcg(model, data)))
        gain, error = paired(sum(user for _, user in runs) / len(runs), reference)
        rows.append({
            "model": "Recommender", "epsilon": private.epsilon if private else math.inf, "target": epsilon,
            "noise": private.noise_multiplier if private else 0.0, "steps": private.steps if private else None,
            "NDCG@10": sum(r["test/NDCG@10"] for r, _ in runs) / len(runs),
            "HR@10": sum(r["test/HR@10"] for r, _ in runs) / len(runs),
            "seconds": (time.perf_counter() - start) / len(runs), "vs_popularity": gain, "vs_popularity_se": error,
            "per_seed": [r["test/NDCG@10"] for r, _ in runs],
        })  # fmt: skip
        print(json.dumps({"set": name, **rows[-1]}), flush=True)
    return {"set": name, "users": data.num_users, "items": data.num_items, "rows": rows, "protocol": data.protocol}


def membership(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np

    from attnrec.evaluation import membership_inference_auc, user_losses
    from attnrec.privacy import window_loader

    rows = []
    for epsilon in (math.inf, 8.0):
        data = datamodule(name, args.batch[name] // 2, held_out=0.5)  # half the users: the same sampling rate
        model, private = train(data, epsilon, args)
        rng = np.random.default_rng(0)
        probes = []
        for sequences in (data.split_data.train, data.held_out):
            users = [u for u, seq in enumerate(sequences) if len(seq) > 1]
            keep = set(rng.choice(users, size=min(len(users), args.probe_users), replace=False).tolist())
            chosen = [seq if u in keep else seq[:0] for u, seq in enumerate(sequences)]
            probes.append(user_losses(model, window_loader(data, chosen))[1])
        auc = membership_inference_auc(*probes)
        rows.append({"set": name, "epsilon": private.epsilon if private else math.inf, "target": epsilon, "auc": auc,
                     "members": len(probes[0]), "non_members": len(probes[1])})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(results: list[dict[str, Any]], probes: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    def eps(value: float) -> str:
        return "∞" if math.isinf(value) else f"{value:.2f}"

    lines = [
        f"## {args.title}",
        "",
        (__doc__ or "").split("\n\n    python")[0].split("\n\n", 1)[1].strip(),
        "",
        f"Command: `{command}`; {platform.processor() or platform.machine()}, accelerator `{args.accelerator}`, "
        f"{args.threads} CPU threads, clip {args.clip}; "
        + "; ".join(f"{name}: {args.epochs[name]} epochs, {args.batch[name]} users per step expected, lr {args.lr[name]}, "
                    f"dim {args.dim[name]}, {args.layers[name]} layer(s)"
                    + (f", popularity prior (noise multiplier {args.prior[name]:g}) in an item bias" if args.prior[name] else "")
                    + (f", mean of {args.seeds[name]} training seeds" if args.seeds[name] > 1 else "")
                    for name in args.epochs) + ".",
        "",
        "| set | model | ε (spent) | noise multiplier | steps | test NDCG@10 | test HR@10 | NDCG@10 − popularity (paired ± SE) | train+test s per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for row in result["rows"]:
            if row["model"] == "popularity":
                lines.append(f"| {result['set']} | popularity | – | – | – | {row['NDCG@10']:.4f} | {row['HR@10']:.4f} | – | – |")
                continue
            lines.append(
                f"| {result['set']} | Recommender | {eps(row['epsilon'])} | {row['noise']:.3g} | {row['steps'] or '–'} | "
                f"{row['NDCG@10']:.4f} | {row['HR@10']:.4f} | {row['vs_popularity']:+.4f} ± {row['vs_popularity_se']:.4f} | "
                f"{row['seconds']:.0f} |"
            )
    if probes:
        lines += ["", "Membership inference (loss threshold, AUC; 0.5 = chance):", "",
                  "| set | ε (spent) | AUC | members / non-members probed |", "|---|---:|---:|---:|"]  # fmt: skip
        for row in probes:
            lines.append(f"| {row['set']} | {eps(row['epsilon'])} | {row['auc']:.3f} | {row['members']} / {row['non_members']} |")
    return "\n".join(lines) + "\n"


def per_set(text: str, names: list[str], cast: Any, default: str) -> dict[str, Any]:
    """``"30"`` for every set, or ``"ml-100k:30,toys:10"`` (a set left out gets ``default``)."""
    if ":" not in text:
        return {name: cast(text) for name in names}
    given = dict(part.split(":") for part in text.split(","))
    return {name: cast(given.get(name, default)) for name in names}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="ml-100k,toys")
    parser.add_argument("--epsilons", default="1,4,8,inf")
    parser.add_argument("--epochs", default="30", help="for every set, or per set (ml-100k:30,toys:10), as the next four")
    parser.add_argument("--batch", default="256", help="expected users per step (Poisson sampling)")
    parser.add_argument("--lr", default="5e-3")
    parser.add_argument("--dim", default="64")
    parser.add_argument("--layers", default="2")
    parser.add_argument("--seeds", default="1", help="training seeds per ε; figures are their mean")
    parser.add_argument("--prior", default="0", help="popularity prior's noise multiplier (0: no prior, no item bias)")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--probe-users", type=int, default=400, help="members and non-members each, per probe")
    parser.add_argument("--parts", default="quality,membership")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="ML-100K, 1 epoch, ε = 8 and ∞, 50 probe users; no file")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--title", default="Differential privacy: quality at ε ∈ {1, 4, 8, ∞} and a membership-inference probe")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.epsilons, args.epochs, args.probe_users = "ml-100k", "8,inf", "1", 50
    args.epsilons = [float(e) for e in args.epsilons.split(",")]
    names = args.sets.split(",")
    for option, cast in (("epochs", int), ("batch", int), ("lr", float), ("dim", int), ("layers", int), ("prior", float),
                         ("seeds", int)):
        setattr(args, option, per_set(getattr(args, option), names, cast, parser.get_default(option)))
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    results = [quality(name, args) for name in names] if "quality" in parts else []
    probes = [row for name in names for row in membership(name, args)] if "membership" in parts else []
    text = report(results, probes, args, "python benchmarks/privacy.py " + shlex.join(sys.argv[1:]))
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
