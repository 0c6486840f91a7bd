"""Knowledge graphs: RecBole atomic ``.kg`` + ``.link`` files, item-keyed catalog features,
and the collaborative knowledge graph (users + items + entities) that KG attention runs on.

The KG travels in the ``ItemCatalog`` as two padded per-item features, so it reaches the
model through the same link as every other item fact and is saved in checkpoints:
``kg_entity [N+1, M]`` (entity ids ``1..E``, 0 = padding) and ``kg_relation [N+1, M]``
(relation codes, 0 = padding). For a triple ``(h, r, t)``: an item linked to ``h`` gets
``(r, t)``; an item linked to ``t`` gets ``(r⁻¹, h)``; every linked item also gets
``(link, own entity)``, so two items that mention each other's entity meet within two hops.
Triples between two entities that no item links to are dropped (they are beyond the one-hop
neighbourhood that the per-item layout holds); :class:`KGStats` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from attnrec.data import DataFormatError, IdMap, tsv_rows
from attnrec.interfaces import ItemCatalog
from torch import Tensor

from .graph import NodeLayout, check_catalog, interaction_graph

KG_ENTITY = "kg_entity"
KG_RELATION = "kg_relation"
LINK_RELATION = "[link]"


def read_atomic(path: str | Path, fields: Iterable[str]) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header ``name:type``) as string columns named by
    ``fields`` (the header's names without their ``:type``)."""
    path = Path(path)
    fields = list(fields)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; pass the path of a RecBole atomic file")
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n\r")
        if not header:
            raise DataFormatError(f"{path}: the file is empty; expected a header such as {_header(fields)}")
        names = [column.split(":", 1)[0] for column in header.split("\t")]
        missing = [f for f in fields if f not in names]
        if missing:
            raise DataFormatError(
                f"{path}: header {header!r} lacks column(s) {', '.join(missing)}; the header line must name "
                f"{_header(fields)} (tab-separated)"
            )
        if len(set(names)) != len(names):
            raise DataFormatError(f"{path}: duplicate column names in header {header!r}")
        rows = []
        for line_no, values in tsv_rows(handle, path, names, "fix or delete the line", start=2):
            for name, value in zip(names, values):
                if name in fields and not value:
                    raise DataFormatError(f"{path}, line {line_no}, column {name}: empty value; every field needs one")
            rows.append(values)
    if not rows:
        raise DataFormatError(f"{path}: only a header, no records; add one record per line")
    return pd.DataFrame(rows, columns=names)[fields]


def _header(fields: list[str]) -> str:
    return "\t".join(f"{f}:token" for f in fields)


def read_kg(kg_path: str | Path, link_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(triples[head, relation, tail], links[item, entity])`` from RecBole's ``.kg``/``.link``."""
    triples = read_atomic(kg_path, ["head_id", "relation_id", "tail_id"])
    triples.columns = ["head", "relation", "tail"]
    links = read_atomic(link_path, ["item_id", "entity_id"])
    links.columns = ["item", "entity"]
    return triples, links


@dataclass(frozen=True)
class KGStats:
    items_linked: int
    triples_kept: int
    triples_dropped: int
    entities: int
    relations: int


def kg_features(item_map: IdMap, triples: pd.DataFrame, links: pd.DataFrame, source: str) -> tuple[dict[str, Tensor], KGStats]:
    """Per-item ``kg_entity``/``kg_relation`` features (see the module docstring) for the items
    of ``item_map``; links to unknown items are ignored. ``source`` names the files in errors."""
    entity_items: dict[str, list[int]] = {}
    for raw_item, entity in zip(links["item"], links["entity"]):
        try:
            item = item_map.index(raw_item)
        except KeyError:
            continue
        entity_items.setdefault(str(entity), []).append(item)
    if not entity_items:
        raise DataFormatError(
            f"{source}: no item_id in the .link file matches an item of the interactions; check that both use "
            "the same raw item ids"
        )
    relation_names = sorted(set(triples["relation"].astype(str)))
    relation_code = {name: i + 1 for i, name in enumerate(relation_names)}
    num_kg = len(relation_names)
    link_code = 2 * num_kg + 1
    rows: dict[int, set[tuple[int, str]]] = {}
    kept = dropped = 0
    for head, relation, tail in zip(triples["head"].astype(str), triples["relation"].astype(str), triples["tail"].astype(str)):
        code = relation_code[relation]
        hit = False
        for item in entity_items.get(head, ()):
            rows.setdefault(item, set()).add((code, tail))
            hit = True
        for item in entity_items.get(tail, ()):
            rows.setdefault(item, set()).add((code + num_kg, head))
            hit = True
        kept += hit
        dropped += not hit
    for entity, items in entity_items.items():
        for item in items:
            rows.setdefault(item, set()).add((link_code, entity))
    entities = sorted({entity for pairs in rows.values() for _, entity in pairs})
    entity_id = {name: i + 1 for i, name in enumerate(entities)}
    width = max(len(pairs) for pairs in rows.values())
    entity_feature = torch.zeros(len(item_map) + 1, width, dtype=torch.long)
    relation_feature = torch.zeros(len(item_map) + 1, width, dtype=torch.long)
    for item, pairs in rows.items():
        ordered = sorted(pairs)
        relation_feature[item, : len(ordered)] = torch.tensor([code for code, _ in ordered])
        entity_feature[item, : len(ordered)] = torch.tensor([entity_id[name] for _, name in ordered])
    stats = KGStats(len(rows), kept, dropped, len(entities), link_code)
    return {KG_ENTITY: entity_feature, KG_RELATION: relation_feature}, stats


def category_kg(items: pd.DataFrame, column: str = "category") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A deterministic one-relation KG from an item table's categorical column: each item's
    entity ``item:<id>`` has ``has_<column>`` -> ``<column>:<value>`` (for data without a KG,
    such as the bundled synthetic shop)."""
    if column not in items.columns:
        raise DataFormatError(f"category_kg: the item table has no {column!r} column (columns: {list(items.columns)})")
    entities = [f"item:{raw}" for raw in items["item"]]
    triples = pd.DataFrame(
        {"head": entities, "relation": f"has_{column}", "tail": [f"{column}:{v}" for v in items[column]]}
    )
    links = pd.DataFrame({"item": items["item"].tolist(), "entity": entities})
    return triples, links


def knowledge_graph(catalog: ItemCatalog) -> tuple[Tensor, Tensor, NodeLayout, int]:
    """The collaborative knowledge graph: ``(edge_index [2, E], edge_type [E], layout, num_relations)``.

    Edge types (source -> target): 0 item -> user, 1 user -> item, ``1 + c`` entity -> item with
    KG relation code ``c``, ``1 + C + c`` item -> entity (its inverse)."""
    check_catalog(catalog, "KGAttentionEncoder")
    if KG_ENTITY not in catalog.features or KG_RELATION not in catalog.features:
        raise ValueError(
            "KGAttentionEncoder needs a catalog with 'kg_entity' and 'kg_relation' features; use KGDataModule "
            "(RecBole .kg + .link files) or SyntheticKGDataModule"
        )
    entity, relation = catalog.features[KG_ENTITY], catalog.features[KG_RELATION]
    num_codes = catalog.cardinality(KG_RELATION) - 1
    layout = NodeLayout(catalog.num_users, catalog.num_items, catalog.cardinality(KG_ENTITY) - 1)
    interactions, _ = interaction_graph(catalog)
    interaction_type = (interactions[0] < layout.item_offset).long()  # user -> item: 1, item -> user: 0
    items, slots = (entity > 0).nonzero(as_tuple=True)
    item_nodes = items + layout.item_offset
    entity_nodes = entity[items, slots] + layout.entity_offset
    codes = relation[items, slots]
    edge_index = torch.cat(
        [interactions, torch.stack([entity_nodes, item_nodes]), torch.stack([item_nodes, entity_nodes])], dim=1
    )
    edge_type = torch.cat([interaction_type, 1 + codes, 1 + num_codes + codes])
    return edge_index, edge_type, layout, 2 + 2 * num_codes


def mapped_triples(catalog: ItemCatalog) -> np.ndarray:
    """``[T, 3]`` (item id, relation code, entity id) of the catalog's KG, for inspection."""
    entity, relation = catalog.features[KG_ENTITY], catalog.features[KG_RELATION]
    items, slots = (entity > 0).nonzero(as_tuple=True)
    return torch.stack([items, relation[items, slots], entity[items, slots]], dim=1).numpy()
