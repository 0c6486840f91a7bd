"""Social attention on Last.fm in the LightGCN authors' fixed split, against popularity and LightGCN.

Protocol: data1.txt (train, 42,135 user-artist pairs) and test1.txt (test, 10,533), 1,880 users,
4,489 artists; the friendship network trustnetwork.txt (25,434 lines, each friendship both
ways; its 12 users without listening in the split are dropped, with the loader's warning).
Full ranking of every artist with the user's training artists masked; Recall@20 / NDCG@20 per
test user, reported as the mean with its standard error (sample standard deviation over users
/ sqrt(users)), overall and on the **cold-user slice**: test users with at most 5 training
artists and at least one friend. For social - LightGCN the paired difference over the same
users and its standard error are given as well. Every trained model gets the same budget and
the same data module: embedding 64, BPR with one uniform negative per positive, positives
weighted by log1p(listen count) (the data module's default, so LightGCN gets them too), L2
1e-4 on the batch's layer-0 embeddings, Adam lr 0.005, 128 user windows (each user's whole
training list) per step, a fixed number of epochs, seed 0 unless ``--seed`` (the training seed: the
split and its simulated cold users do not change with it), no validation or early stopping (the
split has no validation part). LightGCN: 3 LGConv layers, mean of layers 0..3. Social model:
``SocialAttentionEncoder`` (the same LightGCN, plus bilinear attention over a listener's
artists and over their friends, 2 heads, fused linearly from zero). ``nosocial`` is the social
model with the friendship graph removed (an ablation: LightGCN plus the artist attention). The
real split has only 14 cold test users, too few to separate models beyond their standard
errors, so ``--cold_share 0.1`` adds a simulated cold-start protocol: a seeded random 10 % of
the users with more than 5 training artists keep 5 of them (chosen at random; the others leave
the data), test lists unchanged, the same reduced training graph for every model.

``--cache DIR`` keeps every evaluated model's per-user figures in DIR (one file per model and
protocol: epochs, lr, batch size, cold share); when ``lightgcn`` is not among ``--models`` the
paired differences use the cached LightGCN of the same protocol, so a change to the social model
does not need LightGCN retrained. Usage:

    OMP_NUM_THREADS=1 nice python benchmarks/social_lastfm.py [LASTFM_FOLDER] [--epochs 150]
        [--models popularity,lightgcn,social,nosocial] [--cold_share 0.1] [--cache DIR] [--seed S]
    OMP_NUM_THREADS=1 python benchmarks/social_lastfm.py --cache DIR [--cold_share 0.1] --models social --summarize_seeds 0,1,2

(default folder ../shared/data/lastfm_social). Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
import warnings
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm_social"


def per_user(model, data, k: int = 20):  # noqa: ANN001, ANN201 - torch objects, imported lazily
    """Recall@k and NDCG@k of every test list, and the lists' users."""
    import torch
    from attnrec.metrics import NDCG, Recall

    recall, ndcg, users = [], [], []
    model.eval()
    with torch.no_grad():
        for batch in data.test_dataloader():
            ranking = model.rank(batch)
            args = (ranking.ranks, ranking.num_relevant, ranking.num_candidates, k)
            recall.append(Recall()(*args)), ndcg.append(NDCG()(*args)), users.append(batch["user"])
    return torch.cat(recall).double(), torch.cat(ndcg).double(), torch.cat(users)


def summary(values) -> tuple[float, float]:  # noqa: ANN001
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else float("nan")


def seed_summary(name: str, reference: str, seeds: list[int], cached, cold_users) -> dict:  # noqa: ANN001
    """``name`` minus ``reference`` over training seeds: per seed the paired mean ± SE, and the
    users' differences averaged over the seeds first (training noise shrinks, the users stay the
    sampling unit) with the SE over users."""
    import torch

    differences = {"Recall@20": [], "NDCG@20": []}
    row: dict = {"model": name, "reference": reference, "minus_reference_per_seed": {}, "seeds": seeds}
    users = None
    for seed in seeds:
        model, base = torch.load(cached(name, seed)), torch.load(cached(reference, seed))
        assert torch.equal(model["users"], base["users"]), f"seed {seed}: {name} and {reference} have other test lists"
        users = model["users"] if users is None else users
        assert torch.equal(users, model["users"]), f"seed {seed} has other test lists"
        cold = cold_users[users]
        per_seed = {}
        for metric, key in (("Recall@20", "recall"), ("NDCG@20", "ndcg")):
            difference = model[key] - base[key]
            differences[metric].append(difference)
            per_seed[metric], per_seed[f"cold/{metric}"] = summary(difference), summary(difference[cold])
        row["minus_reference_per_seed"][seed] = per_seed
    cold = cold_users[users]
    mean = {metric: torch.stack(values).mean(dim=0) for metric, values in differences.items()}
    row["minus_reference_seed_mean"] = {metric: summary(value) for metric, value in mean.items()} | {
        f"cold/{metric}": summary(value[cold]) for metric, value in mean.items()
    }
    row["cold_users"] = int(cold.sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=128, help="user windows per step")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--models", default="popularity,lightgcn,social")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cold_share", type=float, default=0.0,
        help="simulate cold users: this share of users keep 5 random training artists (see SocialDataModule)",
    )
    parser.add_argument("--cache", help="folder for per-user figures; supplies LightGCN when it is not in --models")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the split and its cold users stay fixed)")
    parser.add_argument(
        "--summarize_seeds",
        help="e.g. 0,1,2: train nothing; from --cache, each model's paired difference with --reference per seed "
        "and averaged over the seeds (each user's difference averaged first, then the SE over users)",
    )
    parser.add_argument("--reference", default="lightgcn", help="the model --summarize_seeds subtracts")
    args = parser.parse_args()
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    def cached(name: str, seed: int | None = None) -> Path:
        assert cache is not None
        seed = args.seed if seed is None else seed
        tail = f"-s{seed}" if seed else ""
        return cache / f"{name}-e{args.epochs}-lr{args.lr:g}-b{args.batch_size}-cold{args.cold_share:g}{tail}.pt"

    import lightning as L
    import torch
    from attnrec.baselines import PopularityRecommender
    from attnrec_graph.model import GraphRecommender

    from attnrec_social.data import LastFMSocialDataModule
    from attnrec_social.model import SocialRecommender

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = LastFMSocialDataModule(args.folder, batch_size=args.batch_size, eval_batch_size=512, cold_share=args.cold_share)
        catalog = data.catalog
    dropped = [str(w.message) for w in caught if "dropped" in str(w.message)]
    data.setup("fit")
    counts = torch.bincount(catalog.train_edges[0], minlength=catalog.num_users + 1)
    friends = torch.bincount(catalog.social_edges[1], minlength=catalog.num_users + 1)
    cold_users = (counts <= 5) & (friends > 0)
    if args.summarize_seeds:
        if cache is None:
            raise SystemExit("--summarize_seeds reads the per-user figures of --cache")
        seeds = [int(x) for x in args.summarize_seeds.split(",")]
        for name in (m for m in args.models.split(",") if m != args.reference):
            print(json.dumps(seed_summary(name, args.reference, seeds, cached, cold_users)), flush=True)
        return
    results = {}
    if cache is not None and "lightgcn" not in args.models.split(",") and cached("lightgcn").exists():
        saved = torch.load(cached("lightgcn"))
        results["lightgcn"] = (saved["recall"], saved["ndcg"], saved["users"])
        print(f"# paired differences against the cached LightGCN {cached('lightgcn')}", flush=True)
    for name in args.models.split(","):
        L.seed_everything(args.seed)
        common = dict(dim=64, lr=args.lr, reg=1e-4, metrics=("Recall", "NDCG"), ks=(20,))
        if name == "popularity":
            model = PopularityRecommender(catalog, metrics=("Recall", "NDCG"), ks=(20,))
        elif name == "lightgcn":
            model = GraphRecommender(catalog, **common)
        elif name in ("social", "nosocial"):
            model = SocialRecommender(catalog, **common)
            if name == "nosocial":
                model.social.set_social_graph(torch.zeros(2, 0, dtype=torch.long))
        else:
            raise SystemExit(f"unknown model {name!r}; choose popularity, lightgcn, social, nosocial")
        seconds, epochs = 0.0, 0
        if name != "popularity":
            trainer = L.Trainer(
                max_epochs=args.epochs, enable_progress_bar=False, enable_model_summary=False, logger=False,
                enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
            )  # fmt: skip
            start = time.perf_counter()
            trainer.fit(model, datamodule=data)
            seconds, epochs = time.perf_counter() - start, trainer.current_epoch
        recall, ndcg, users = per_user(model, data)
        if cache is not None:
            torch.save({"recall": recall, "ndcg": ndcg, "users": users}, cached(name))
        cold = cold_users[users]
        results[name] = (recall, ndcg, users)
        row = {
            "model": name, "epochs": epochs, "sec_per_epoch": seconds / max(epochs, 1),
            "Recall@20": summary(recall), "NDCG@20": summary(ndcg), "test_users": int(users.numel()),
            "cold/Recall@20": summary(recall[cold]), "cold/NDCG@20": summary(ndcg[cold]), "cold_users": int(cold.sum()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }  # fmt: skip
        if name in ("social", "nosocial") and "lightgcn" in results:
            base_recall, base_ndcg, base_users = results["lightgcn"]
            assert torch.equal(base_users, users), "LightGCN's figures are for other test lists"
            row["minus_lightgcn"] = {
                "Recall@20": summary(recall - base_recall), "NDCG@20": summary(ndcg - base_ndcg),
                "cold/Recall@20": summary((recall - base_recall)[cold]), "cold/NDCG@20": summary((ndcg - base_ndcg)[cold]),
            }  # fmt: skip
        row["protocol"] = dict(data.protocol) | {"seed": args.seed, "social_warnings": dropped}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
