"""Collect benchmarks/results/*.md into docs/benchmarks.md (each section keeps the command and
protocol its script wrote). Run after any benchmark: ``python benchmarks/collect.py``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
ORDER = ["core", "data", "data_prep", "sequential", "peer", "ecommerce", "graph", "news", "video", "social", "serving", "privacy", "privacy_prior"]
HEADER = """# Benchmarks

Every figure below was produced by the script named with it, on this project's 2-core CPU machine
unless stated otherwise, and is reported with its protocol tuple (split, candidates, max length,
filtering, loss). Full-ranking and sampled-negative figures differ by up to 10x: never compare
across protocols. Many timings were taken while other jobs shared the two cores; those sections
say so, and their seconds are pessimistic. Regenerate this page with `python benchmarks/collect.py`
after running a benchmark.
"""


def _under_title(text: str) -> str:
    """Shift a file's headings so its top level sits just under this page's title."""
    lines = text.splitlines()
    levels = [len(line) - len(line.lstrip("#")) for line in lines if line.startswith("#")]
    shift = 2 - min(levels, default=2)
    return "\n".join(("#" * shift + line if shift > 0 else line[-shift:]) if line.startswith("#") else line for line in lines)


def main() -> None:
    sections = [HEADER]
    found = {path.stem: path for path in (ROOT / "results").glob("*.md")}
    for name in ORDER + sorted(set(found) - set(ORDER)):
        if name in found:
            text = found[name].read_text().strip()
            text = _under_title(text)
            sections.append(f"<!-- from benchmarks/results/{name}.md -->\n{text}\n")
    out = ROOT.parent / "docs" / "benchmarks.md"
    out.write_text("\n".join(sections))
    print(f"wrote {out} ({len(sections) - 1} sections)")


if __name__ == "__main__":
    main()
