"""Fail when a built tutorial page has no figure. Figures vanish silently: ``plt.show()`` under a
headless backend (CI exports ``MPLBACKEND=Agg``) renders nothing and raises nothing, so the site
would show the code with no picture. Usage: ``python .ci/check_figures.py SITE_DIR``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

FIGURE = re.compile(r'<img [^>]*src="data:image/png;base64,')  # an output image (the theme's CSS has data URLs too)
# Tutorials whose point is not a picture (a prediction file, an HTTP exchange).
WITHOUT_FIGURES = {"06_serving"}


def main(site: Path) -> int:
    pages = sorted((site / "tutorials").glob("*/index.html"))
    if not pages:
        print(f"check_figures: no tutorial pages under {site / 'tutorials'}", file=sys.stderr)
        return 1
    missing = []
    for page in pages:
        figures = len(FIGURE.findall(page.read_text(encoding="utf-8")))
        print(f"{page.parent.name}: {figures} figure(s)")
        if figures == 0 and page.parent.name not in WITHOUT_FIGURES:
            missing.append(page.parent.name)
    if missing:
        print(f"check_figures: no figure in {', '.join(missing)}; show figures as PNGs (see tutorial 01)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
