"""RecBole 1.2.1's SASRec under a wall-clock budget: the peer column of ``sequential_amazon.py --parts peer``.

Runs in RecBole's own virtual environment (it needs ``numpy<2``, ``setuptools<81`` and
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), so it imports nothing from attnrec and is started as a
subprocess. It prints one JSON object on its last line.

Protocol (RecBole's own for sequential models): leave-one-out by time (``LS: valid_and_test``),
full ranking with the user's seen items left rankable, CE loss over the whole catalogue, every
prefix of a training sequence as its own example, SASRec at RecBole's defaults (2 layers, 2 heads,
hidden 64, feed-forward 256, dropout 0.5, Adam lr 1e-3, 2,048 sequences per batch). Budget rule,
the same as the attnrec side's: an epoch counts only if its validation ended within the budget;
whenever validation NDCG@10 improves, every test user's rank is computed from the scores RecBole's
own ``Trainer`` produces, so the standard error is of the same per-user values RecBole averages.

    python3 -m venv <venv> && <venv>/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "setuptools<81" "pandas<2.2"
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 <venv>/bin/python benchmarks/recbole_peer.py \\
        --lines ../shared/data/amazon_s3rec/Toys_and_Games.txt --minutes 15 --threads 2 --batch-size 256

(pandas 3 makes RecBole 1.2.1's in-place ``fillna`` a silent no-op under copy-on-write, hence
``pandas<2.2``.) Normally ``sequential_amazon.py --parts peer --recbole-python <venv>/bin/python``
starts it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# the attnrec side's metric helpers (sequential_amazon.py imports only the standard library at
# module level, so RecBole's venv can load it; this script runs from benchmarks/)
from sequential_amazon import hit_and_gain, mean_se


def write_atomic(args: argparse.Namespace, root: Path) -> str:
    """RecBole reads ``<data_path>/<name>/<name>.inter``; a one-line-per-user file becomes one row
    per item with its position in the line as the timestamp (the line is already in time order)."""
    if args.inter:
        name = Path(args.inter).stem
        (root / name).mkdir()
        shutil.copy(args.inter, root / name / f"{name}.inter")
        return name
    name = Path(args.lines).stem
    (root / name).mkdir()
    with open(args.lines) as source, open(root / name / f"{name}.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in source:
            user, *items = line.split()
            out.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items))
    return name


def per_user(trainer, data) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """HR@10 and NDCG@10 of every test user, from RecBole's own full-sort scores (seen items
    unmasked, padding item excluded); rank = 1 + the number of items scored above the target."""
    import torch

    trainer.model.eval()
    trainer.tot_item_num = data._dataset.item_num
    hits, gains = [], []
    with torch.no_grad():
        for batch in data:
            _, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            target = scores[positive_u, positive_i]
            hit, gain = hit_and_gain((scores > target[:, None]).sum(1) + 1)
            hits += hit
            gains += gain
    return hits, gains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lines", help="one-line-per-user file (uid i1 i2 ...)")
    source.add_argument("--inter", help="RecBole atomic .inter file with user_id, item_id, timestamp")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048, help="training sequences per batch (RecBole's default 2,048)")
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = write_atomic(args, root)
        os.chdir(root)  # RecBole's Trainer writes ./log_tensorboard into the working folder
        config = Config(model="SASRec", dataset=name, config_dict={
            "data_path": str(root), "checkpoint_dir": str(root / "saved"), "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 50,
            "loss_type": "CE", "train_neg_sample_args": None, "train_batch_size": args.batch_size,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "use_gpu": False,
            "show_progress": False, "seed": 0, "reproducibility": True, "log_wandb": False,
        })  # fmt: skip
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        model = SASRec(config, train._dataset)
        trainer = Trainer(config, model)
        torch.set_num_threads(args.threads)
        budget = args.minutes * 60
        best, curve, epochs, epoch_s = {"val": -1.0}, [], 0, []
        start = time.perf_counter()
        while True:
            began = time.perf_counter()
            trainer._train_epoch(train, epochs)
            epoch_s.append(time.perf_counter() - began)
            value, _ = trainer._valid_epoch(valid)
            wall = time.perf_counter() - start
            if wall > budget:
                break
            epochs += 1
            if value > best["val"]:
                hits, gains = per_user(trainer, test)
                best.update(val=float(value), epoch=epochs - 1, hr=mean_se(hits), ndcg=mean_se(gains), wall=wall)
                curve.append({"epoch": epochs - 1, "wall_s": round(wall, 1), "val_NDCG@10": float(value),
                              "test_HR@10": best["hr"][0], "test_NDCG@10": best["ndcg"][0]})  # fmt: skip
                print(json.dumps(curve[-1]), flush=True)
        print(json.dumps({"set": name, "minutes": args.minutes, "epochs": epochs, "seconds_per_epoch": epoch_s,
                          "best": best, "curve": curve, "users": dataset.user_num - 1, "items": dataset.item_num - 1,
                          "examples": len(train._dataset)}))  # fmt: skip


if __name__ == "__main__":
    main()
