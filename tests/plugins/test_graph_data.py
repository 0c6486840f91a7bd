"""The graph plugin's data side: the training graph, its normalisation, KG files, given splits."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from attnrec.data import DataFormatError, SyntheticDataModule
from attnrec.interfaces import ItemCatalog

from attnrec_graph.data import KGDataModule, LightGCNFilesDataModule, SyntheticKGDataModule
from attnrec_graph.encoders import GraphAttentionEncoder, KGAttentionEncoder, LightGCNEncoder
from attnrec_graph.graph import interaction_graph, normalized_adjacency, sparse_adjacency
from attnrec_graph.kg import KG_ENTITY, knowledge_graph, mapped_triples, read_kg

SMALL = dict(num_users=200, num_items=150, max_len=20, batch_size=64, split="ratio", num_negatives=1)


def _pairs(edge_index: torch.Tensor, offset: int) -> set[tuple[int, int]]:
    """(user, item) pairs of the user -> item edges of a graph in the plugin's node layout."""
    users = edge_index[0] < offset
    return {(u, i - offset) for u, i in zip(edge_index[0][users].tolist(), edge_index[1][users].tolist())}


def test_graph_holds_exactly_the_training_interactions_and_no_held_out_one() -> None:
    data = SyntheticDataModule(**SMALL)
    data.setup("fit")
    s = data.split_data
    train = {(u, int(i)) for u in range(1, data.num_users + 1) for i in s.train[u]}
    held_out = {(u, int(i)) for u in range(1, data.num_users + 1) for i in np.concatenate([s.val[u], s.test[u]])}
    assert held_out and train
    for encoder in (LightGCNEncoder(data.catalog, 8), GraphAttentionEncoder(data.catalog, 8)):
        graph = _pairs(encoder.edge_index, encoder.layout.item_offset)
        assert graph == train
        assert not graph & held_out
        reverse = _pairs(encoder.edge_index.flip(0), encoder.layout.item_offset)
        assert reverse == train  # undirected: items see their users too


def test_normalised_adjacency_matches_a_dense_reference() -> None:
    # users 1, 2 and 3 (3 has no edge); items 1..3; user 1 -> items 1, 2; user 2 -> item 2
    catalog = ItemCatalog(num_items=3, num_users=3, train_edges=torch.tensor([[1, 1, 2], [1, 2, 2]]))
    edge_index, layout = interaction_graph(catalog)
    n = layout.num_nodes
    dense = torch.zeros(n, n)
    for u, i in [(1, 1), (1, 2), (2, 2)]:
        dense[u, layout.item_offset + i] = dense[layout.item_offset + i, u] = 1.0
    degree = dense.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    reference = inv_sqrt[:, None] * dense * inv_sqrt[None, :]
    index, weight = normalized_adjacency(edge_index, n)
    built = torch.zeros(n, n)
    built[index[0], index[1]] = weight
    torch.testing.assert_close(built, reference)
    torch.testing.assert_close(sparse_adjacency(index, weight, n).to_dense(), reference.T)
    # user 1 (degree 2) - item 2 (degree 2): 1 / sqrt(2 * 2)
    assert built[1, layout.item_offset + 2] == pytest.approx(0.5)


def test_a_catalog_without_training_edges_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="train_edges.*interaction data module"):
        LightGCNEncoder(ItemCatalog(num_items=3), 8)


# --------------------------------------------------------------------- KG files
KG = "head_id:token\trelation_id:token\ttail_id:token\nm.a\tdirected_by\tm.x\nm.b\tdirected_by\tm.x\nm.a\tsequel_of\tm.b\nm.x\tborn_in\tm.y\n"
LINK = "item_id:token\tentity_id:token\n10\tm.a\n20\tm.b\n99\tm.z\n"


def _interactions() -> datasets.Dataset:
    users = [1, 1, 2, 2, 3, 3, 3]
    items = [10, 20, 10, 30, 20, 30, 10]
    return datasets.Dataset.from_dict({"user": users, "item": items, "timestamp": list(range(len(users)))})


def _write(tmp_path: Path, kg: str = KG, link: str = LINK) -> tuple[Path, Path]:
    (tmp_path / "toy.kg").write_text(kg)
    (tmp_path / "toy.link").write_text(link)
    return tmp_path / "toy.kg", tmp_path / "toy.link"


def test_kg_triples_land_on_internal_item_ids(tmp_path: Path) -> None:
    kg_path, link_path = _write(tmp_path)
    data = KGDataModule(str(kg_path), str(link_path), table=_interactions(), split="ratio")
    catalog = data.catalog
    item = {raw: data.item_map.index(raw) for raw in (10, 20, 30)}
    triples = {tuple(row) for row in mapped_triples(catalog).tolist()}
    # relations sorted: born_in=1, directed_by=2, sequel_of=3; inverse = code + 3; link = 7
    entity = {name: i + 1 for i, name in enumerate(sorted(["m.a", "m.b", "m.x"]))}
    assert (item[10], 2, entity["m.x"]) in triples  # m.a directed_by m.x
    assert (item[20], 2, entity["m.x"]) in triples
    assert (item[10], 3, entity["m.b"]) in triples  # m.a sequel_of m.b
    assert (item[20], 3 + 3, entity["m.a"]) in triples  # inverse, on the tail's item
    assert (item[10], 7, entity["m.a"]) in triples and (item[20], 7, entity["m.b"]) in triples  # own entity
    assert not (catalog.features[KG_ENTITY][item[30]] > 0).any()  # item 30 has no link
    assert data.kg_stats is not None and data.kg_stats.triples_dropped == 1  # m.x born_in m.y: no item
    edge_index, edge_type, layout, relations = knowledge_graph(catalog)
    assert relations == 2 + 2 * 7 and int(edge_type.max()) < relations
    assert layout.num_nodes == layout.entity_offset + len(entity) + 1
    # item 10 and item 20 meet through the entity m.x (both directed_by it)
    x_node = layout.entity_offset + entity["m.x"]
    into_x = set(edge_index[0][edge_index[1] == x_node].tolist())
    assert {layout.item_offset + item[10], layout.item_offset + item[20]} <= into_x


@pytest.mark.parametrize(
    ("kg", "link", "error", "message"),
    [
        ("", LINK, DataFormatError, r"toy\.kg: the file is empty"),
        ("head_id:token\trelation_id:token\n", LINK, DataFormatError, r"toy\.kg: header .* lacks column\(s\) tail_id"),
        (KG + "m.c\tdirected_by\n", LINK, DataFormatError, r"toy\.kg, line 6: expected 3 tab-separated fields \(head_id, relation_id, tail_id\), found 2"),
        ("head_id:token\trelation_id:token\ttail_id:token\n", LINK, DataFormatError, r"toy\.kg: only a header"),
        (KG, "item_id:token\tentity_id:token\n777\tm.a\n", DataFormatError, r"no item_id in the \.link file matches"),
        (KG, "item_id:token\tentity_id:token\n10\t\n", DataFormatError, r"toy\.link, line 2, column entity_id: empty"),
    ],
)
def test_malformed_kg_files_name_the_file_line_and_fix(tmp_path: Path, kg: str, link: str, error: type, message: str) -> None:
    kg_path, link_path = _write(tmp_path, kg, link)
    with pytest.raises(error, match=message):
        KGDataModule(str(kg_path), str(link_path), table=_interactions()).setup("fit")


def test_missing_kg_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.kg"):
        read_kg(tmp_path / "nowhere.kg", tmp_path / "nowhere.link")


def test_kg_encoder_needs_kg_features() -> None:
    data = SyntheticDataModule(**SMALL)
    with pytest.raises(ValueError, match="kg_entity.*SyntheticKGDataModule"):
        KGAttentionEncoder(data.catalog, 8)


def test_synthetic_kg_links_every_item_to_its_category() -> None:
    data = SyntheticKGDataModule(**{k: v for k, v in SMALL.items() if k != "split"})
    catalog = data.catalog
    triples = mapped_triples(catalog)
    has_category = triples[triples[:, 1] == 1]
    assert len(has_category) == catalog.num_items
    # items of one category share one entity, and only they do
    entity_of = dict(zip(has_category[:, 0].tolist(), has_category[:, 2].tolist()))
    category = catalog.features["category"]
    for a in range(1, 20):
        for b in range(1, 20):
            assert (entity_of[a] == entity_of[b]) == bool(category[a] == category[b])


# ------------------------------------------------------------- given-split files
def test_lightgcn_files_reproduce_the_given_split(tmp_path: Path) -> None:
    (tmp_path / "train_part00.txt").write_text("0 1 2 3\n1 2 4\n")
    (tmp_path / "train_part01.txt").write_text("2 0 1 4 5\n")
    (tmp_path / "test.txt").write_text("0 4\n1 0 5\n2 3\n")
    data = LightGCNFilesDataModule([str(tmp_path / "train_part00.txt"), str(tmp_path / "train_part01.txt")],
                                   str(tmp_path / "test.txt"))  # fmt: skip
    data.setup("fit")
    s = data.split_data

    def raw(user: int, part: list[np.ndarray]) -> set[int]:
        return {data.item_map.raw[i] for i in part[data.user_map.index(user)]}

    assert [raw(u, s.train) for u in (0, 1, 2)] == [{1, 2, 3}, {2, 4}, {0, 1, 4, 5}]
    assert [raw(u, s.test) for u in (0, 1, 2)] == [{4}, {0, 5}, {3}]
    assert all(len(v) == 0 for v in s.val)
    assert "given files" in data.protocol["split"]
    test_users = sorted(data.eval_lists("test").users.tolist())
    assert test_users == sorted(data.eval_lists("val").users.tolist()) == [1, 2, 3]


def test_lightgcn_files_reject_non_integer_ids(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1 2\n1 x 4\n")
    (tmp_path / "test.txt").write_text("0 4\n")
    data = LightGCNFilesDataModule([str(tmp_path / "train.txt")], str(tmp_path / "test.txt"))
    with pytest.raises(DataFormatError, match=r"train\.txt, line 2: non-integer id"):
        data.setup("fit")


def test_graph_modules_take_eval_mask_seen_and_rebuild_from_hyperparameters(tmp_path: Path) -> None:
    kg_path, link_path = _write(tmp_path)
    (tmp_path / "train.txt").write_text("0 1 2 3\n1 2 4\n2 0 1 4 5\n")
    (tmp_path / "test.txt").write_text("0 4\n1 0 5\n2 3\n")
    modules = [
        SyntheticKGDataModule(**{k: v for k, v in SMALL.items() if k != "split"}, eval_mask_seen=False),
        KGDataModule(str(kg_path), str(link_path), table=_interactions(), eval_mask_seen=False, max_len=20),
        LightGCNFilesDataModule([str(tmp_path / "train.txt")], str(tmp_path / "test.txt"), eval_mask_seen=False, max_len=20),
    ]
    for data in modules:
        assert "seen" not in next(iter(data.test_dataloader()))
        assert "NOT masked" in data.protocol["candidates"]
        assert "table" not in data.hparams  # an in-memory table is no hyper-parameter
        again = type(data)(**data.hparams)  # what a checkpoint does
        assert (again.max_len, again.eval_mask_seen, again.split_name) == (20, False, data.split_name)
    kg = modules[1]
    assert (kg.split_name, kg.test_ratio, kg.num_negatives) == ("ratio", 0.2, 1)  # the graph-CF defaults
    assert not {"split", "val_ratio", "test_ratio"} & set(modules[2].hparams)  # the files are the split
