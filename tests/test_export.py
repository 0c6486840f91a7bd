"""Export: onnxruntime's query vectors and scores equal torch's within 1e-4 for the built-in
sequential models (any batch size and history length), item vectors keep raw ids, and models
without an item-independent user vector are refused with the reason."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from attnrec import Recommender
from attnrec.cli import main
from attnrec.encoders import PoolingUserEncoder
from attnrec.export import ExportError, UserTower, export_model, read_item_vectors
from attnrec.interfaces import ItemCatalog
from attnrec.plugins import get_component
from attnrec.scorers import CosineScorer, MLPScorer

NUM_ITEMS, MAX_LEN = 90, 12


def _catalog() -> ItemCatalog:
    raw = [""] + [f"sku-{i:03d}" for i in range(1, NUM_ITEMS + 1)]
    titles = [""] + [f"thing {i}" for i in range(1, NUM_ITEMS + 1)]
    category = torch.arange(NUM_ITEMS + 1) % 7
    return ItemCatalog(NUM_ITEMS, num_users=5, raw_ids=raw, titles=titles, features={"category": category})


def _models() -> dict[str, Recommender]:
    torch.manual_seed(0)
    catalog = _catalog()
    sasrec = get_component("recommenders", "SASRec")
    return {
        "SASRec": sasrec(catalog, dim=16, max_len=MAX_LEN),
        "transformer+cosine": Recommender(catalog, dim=16, max_len=MAX_LEN, scorer=CosineScorer),
        "pooling": Recommender(catalog, dim=16, user_encoder=functools.partial(PoolingUserEncoder)),
        "transformer+cosine+item_bias": Recommender(catalog, dim=16, max_len=MAX_LEN, scorer=CosineScorer, item_bias=True),
    }


def _histories(batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    histories = torch.randint(1, NUM_ITEMS + 1, (batch, length), generator=generator)
    histories[: batch // 2, : length // 2] = 0  # left padding
    return histories


def _perturbed(name: str) -> Recommender:
    """A built-in model with weights moved off their initialisation (zero biases, identity
    layer norms would hide a wrongly exported term)."""
    model = _models()[name].eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("name", ["transformer+cosine", "pooling", "transformer+cosine+item_bias"])  # SASRec: CLI below
def test_onnx_user_vectors_and_scores_equal_torch(name: str, tmp_path: Path) -> None:
    model = _perturbed(name)
    meta = export_model(model, tmp_path, max_len=MAX_LEN, optimize=False)
    assert meta["onnx_max_abs_diff"] < 1e-4
    _check_parity(model, tmp_path)


def _check_parity(model: Recommender, folder: Path) -> None:
    session = ort.InferenceSession(str(folder / "user_encoder.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, MAX_LEN), (5, 3), (3, 1)):  # dynamic batch and history length
        histories = _histories(batch, length, seed=batch)
        query, scores = session.run(None, {"history": histories.numpy()})
        with torch.no_grad():
            expected = model.scoring({"history": histories}).chunk(0, NUM_ITEMS + 1)[:, 1:]  # the model's own scores
        assert np.abs(scores - expected.numpy()).max() < 1e-4
        ids, vectors, _ = read_item_vectors(folder / "item_vectors.parquet")
        assert np.abs(query @ vectors.numpy().T - expected.numpy()).max() < 1e-4  # score = query . item vector


def test_cli_export_of_sasrec_keeps_raw_ids_titles_and_parity(tmp_path: Path, capsys) -> None:
    model = _perturbed("SASRec")
    checkpoint = tmp_path / "model.ckpt"
    _save(model, checkpoint)
    assert main(["export", f"--ckpt_path={checkpoint}", f"--out={tmp_path / 'out'}"]) == 0
    assert "onnxruntime vs torch" in capsys.readouterr().out
    ids, vectors, titles = read_item_vectors(tmp_path / "out" / "item_vectors.parquet")
    assert ids == [f"sku-{i:03d}" for i in range(1, NUM_ITEMS + 1)]
    assert titles is not None and titles[4] == "thing 5"
    assert torch.allclose(vectors, model.item_encoder.all_items()[1:].detach())
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert meta["num_items"] == NUM_ITEMS and meta["max_len"] == MAX_LEN and meta["onnx_max_abs_diff"] < 1e-4
    _check_parity(model, tmp_path / "out")


def _save(model: Recommender, path: Path) -> None:
    """A checkpoint as ``attnrec fit`` writes one, without training."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


def test_models_without_an_item_independent_user_vector_are_refused() -> None:
    catalog = _catalog()
    din = get_component("recommenders", "DIN")(catalog, dim=16, max_len=MAX_LEN)
    with pytest.raises(ExportError, match="target-aware"):
        UserTower(din)
    mlp = Recommender(catalog, dim=16, max_len=MAX_LEN, scorer=MLPScorer)
    with pytest.raises(ExportError, match="MLPScorer is not an inner product"):
        UserTower(mlp)
