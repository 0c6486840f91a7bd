"""MkDocs hooks: pages written for the repository (the README as the home page, links from
``docs/`` to ``../tutorials/``) get the links that work on the site."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri == "index.md":
        markdown = re.sub(r"\]\(docs/", "](", README.read_text(encoding="utf-8"))
    return markdown.replace("](../tutorials/", "](tutorials/")
