"""The social attention model is LightGCN with social diffusion plus attended artists and friends, learns the bundled sample's planted taste
communities (beats popularity overall and on the cold-user slice), its friend explanations name
real friends with attention summing to one and shares that add up to the score exactly, its
artist attention sums to one over each listener's artists, checkpoints carry the social graph,
and the YAML config trains through ``attnrec fit`` and serves ``recommend``."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from attnrec.baselines import PopularityRecommender
from attnrec.cli import main
from attnrec.metrics import Recall
from attnrec.model import Recommender
from attnrec.testing import check_item_encoder, tiny_catalog
from torch_geometric.utils import scatter

from attnrec_graph.encoders import LightGCNEncoder
from attnrec_social.data import SAMPLE, SocialSampleDataModule
from attnrec_social.encoders import SocialAttentionEncoder
from attnrec_social.model import SocialRecommender

CONFIG = Path(__file__).parents[2] / "plugins" / "attnrec_social" / "configs" / "social_attention.yaml"


def _trainer(**kwargs: object) -> L.Trainer:
    options = dict(
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    return L.Trainer(**(options | kwargs))


@pytest.fixture(scope="module")
def trained() -> tuple[SocialRecommender, SocialSampleDataModule, dict[str, float], L.Trainer]:
    data = SocialSampleDataModule()
    L.seed_everything(0)
    model = SocialRecommender(data.catalog, dim=32, lr=0.01, metrics=("Recall", "NDCG"), ks=(20,))
    trainer = _trainer(max_epochs=4)
    trainer.fit(model, datamodule=data)
    return model, data, trainer.test(model, datamodule=data, verbose=False)[0], trainer


def _popularity_recall(data: SocialSampleDataModule, cold: torch.Tensor) -> tuple[float, float]:
    """Popularity's test Recall@20 overall and on the rows of ``cold`` users."""
    model = PopularityRecommender(data.catalog, metrics=("Recall",), ks=(20,)).eval()
    values, users = [], []
    with torch.no_grad():
        for batch in data.test_dataloader():
            ranking = model.rank(batch)
            values.append(Recall()(ranking.ranks, ranking.num_relevant, ranking.num_candidates, 20))
            users.append(batch["user"])
    recall, user = torch.cat(values), torch.cat(users)
    return float(recall.mean()), float(recall[cold[user]].mean())


def test_beats_popularity_overall_and_on_cold_users(trained) -> None:  # noqa: ANN001
    model, data, results, _ = trained
    overall, cold = _popularity_recall(data, model.cold_users())
    assert results["test/cold/lists"] >= 50  # the sample's cold users (3-6 artists) have test lists
    assert results["test/Recall@20"] > 2 * overall, (results, overall)
    assert results["test/cold/Recall@20"] > 2 * cold, (results, cold)


def test_cold_users_have_few_training_artists_and_friends(trained) -> None:  # noqa: ANN001
    model, data, _, _ = trained
    cold = model.cold_users().nonzero().flatten().tolist()
    assert cold and all(len(data.split_data.train[u]) <= 5 for u in cold)
    has_friends = set(data.catalog.social_edges[1].tolist())
    assert set(cold) <= has_friends


def test_friend_explanations_name_real_friends_and_add_up_to_the_score(trained) -> None:  # noqa: ANN001
    model, data, _, _ = trained
    friends = pd.read_csv(SAMPLE / "friends.csv").astype(str)
    user = int(model.cold_users().nonzero()[0])
    raw = data.user_map.raw[user]
    real = set(friends.loc[friends["user"] == raw, "friend"]) | set(friends.loc[friends["friend"] == raw, "user"])
    seen = torch.as_tensor(data.split_data.train[user]).unsqueeze(0)
    top, _ = model.eval().recommend({"user": torch.tensor([user]), "history": seen, "seen": seen}, k=1)
    item = int(top[0, 0])
    explained = model.explain_friends(user, item)
    assert {f.name for f in explained} == real and len(explained) == len(real)
    assert sum(f.attention for f in explained) == pytest.approx(1.0, abs=1e-5)
    shares = [f.contribution for f in explained]
    assert shares == sorted(shares, reverse=True)
    with torch.no_grad():
        score = float(model.scoring({"user": torch.tensor([user]), "history": seen}).items(top)[0, 0])
    assert model.social.own_part(user, item) + sum(shares) == pytest.approx(score, rel=1e-4, abs=1e-4)
    assert len(model.explain_friends(user, item, k=2)) == min(2, len(real))
    artists = model.explain_artists(user, item, k=3)
    assert artists and {a.id for a in artists} <= set(data.split_data.train[user].tolist())


def test_checkpoint_carries_the_social_graph(trained, tmp_path: Path) -> None:  # noqa: ANN001
    model, data, _, trainer = trained
    path = tmp_path / "social.ckpt"
    trainer.save_checkpoint(path)
    loaded = Recommender.load_from_checkpoint(path)  # catalog from the checkpoint: no social edges in it
    assert isinstance(loaded, SocialRecommender)
    assert torch.equal(loaded.social.social_index, model.social.social_index)
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        expected = model.eval().scoring(batch).chunk(0, 50)
        assert torch.allclose(loaded.eval().scoring(batch).chunk(0, 50), expected, atol=1e-5)
    user = int(model.cold_users().nonzero()[0])
    assert [f.name for f in loaded.explain_friends(user)] == [f.name for f in model.explain_friends(user)]


@pytest.mark.parametrize(("diffusion", "anchor"), [(0.0, None), (0.25, 5)])
def test_untrained_encoder_is_diffused_lightgcn_plus_plain_means(diffusion: float, anchor: int | None) -> None:
    """LightGCN's layers with each listener's row mixed ``1 - b_u : b_u`` with the mean of their
    friends' previous layer (plain LightGCN at ``b = 0``); untrained attention is uniform, so a
    listener's vector adds ``w_u / 4`` (one layer's weight of four, scaled) of the mean of their
    artists, then ``w_u / 4`` of their friends' mean; ``w_u = 2a / (a + n_u)`` for ``n_u``
    artists (1 without an anchor), ``b_u = w_u b``; artists are the propagation's. Only the
    attention is trained: the value maps stay the identity."""
    catalog = SocialSampleDataModule().catalog
    torch.manual_seed(0)
    social = SocialAttentionEncoder(catalog, 16, diffusion=diffusion, anchor_artists=anchor)
    torch.manual_seed(0)
    lightgcn = LightGCNEncoder(catalog, 16)
    assert social.mix == 0.25 and not any(p.requires_grad for p in (social.listening.value.weight, social.social.value.weight))
    users = catalog.num_users + 1
    friends = catalog.social_edges
    has_friends = (torch.bincount(friends[1], minlength=users) > 0).float().unsqueeze(1)
    listened = catalog.train_edges.unique(dim=1)
    artists_of = torch.bincount(listened[0], minlength=users).float().unsqueeze(1)
    w = torch.ones_like(artists_of) if anchor is None else 2 * anchor / (anchor + artists_of)
    assert anchor is None or (w[artists_of.squeeze(1) == anchor] == 1).all()
    with torch.no_grad():
        ours = social.propagate()
        layers = [lightgcn.embedding.weight]
        for _ in range(3):
            out = lightgcn.conv(layers[-1], lightgcn.adj_t)
            mean = scatter(layers[-1][friends[0]], friends[1], dim=0, dim_size=users, reduce="mean")
            share = diffusion * w * has_friends
            out[:users] = out[:users] * (1 - share) + share * mean
            layers.append(out)
        nodes = torch.stack(layers).mean(0)
    propagated, artists = nodes[:users], nodes[users:]
    item_space = propagated + 0.25 * w * scatter(artists[listened[1]], listened[0], dim=0, dim_size=users, reduce="mean")
    expected = item_space + 0.25 * w * scatter(item_space[friends[0]], friends[1], dim=0, dim_size=users, reduce="mean")
    expected[0] = 0.0
    assert torch.allclose(ours.users, expected, atol=1e-5)
    assert torch.allclose(ours.items[1:], artists[1:], atol=1e-5)
    if diffusion:
        assert not torch.allclose(ours.items, lightgcn.propagate().items, atol=1e-3)  # friends reach artists too


def test_artist_attention_sums_to_one_over_each_listeners_artists(trained) -> None:  # noqa: ANN001
    model, data, _, _ = trained
    edge_index, weights = model.edge_attention()
    layout = model.social.layout
    assert bool((edge_index[1] < layout.item_offset).all()) and bool((edge_index[0] >= layout.item_offset).all())
    assert edge_index.shape[1] == data.catalog.train_edges.unique(dim=1).shape[1]  # one per listened artist
    totals = scatter(weights[0], edge_index[1], dim=0, dim_size=layout.item_offset, reduce="sum")
    listeners = edge_index[1].unique()
    assert torch.allclose(totals[listeners], torch.ones_like(totals[listeners]), atol=1e-5)


def test_encoder_works_without_a_social_graph() -> None:
    check_item_encoder(SocialAttentionEncoder, tiny_catalog())
    encoder = SocialAttentionEncoder(tiny_catalog(), 8)
    assert encoder.social_index.shape == (2, 0)
    with pytest.raises(ValueError, match="social graph names users beyond"):
        encoder.set_social_graph(torch.tensor([[1], [10_000]]))


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_config_trains_and_recommends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    assert main(["fit", "--config", str(CONFIG), *args]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ cold/Recall@20\s+│\s+0\.\d+ │", out), out
    assert "social=2316 directed edges" in out and "weights=log1p(listens)" in out and "loss=BPRLoss" in out
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").exists()
    found = re.search(r"^best checkpoint: (.+\.ckpt)$", out, re.MULTILINE)
    assert found, out
    assert main(["recommend", "--ckpt_path", found.group(1), "--user", "3", "-k", "5"]) == 0
    assert "top 5 for user 3" in capsys.readouterr().out
