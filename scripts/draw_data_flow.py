"""Draw docs/data-flow.svg, the picture of how data flows through drdo-ray (README and docs):

    python scripts/draw_data_flow.py            # rewrites docs/data-flow.svg

Text stays text in the SVG (small, sharp at any size, rendered by the forge's browser)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

OUT = Path(__file__).resolve().parents[1] / "docs" / "data-flow.svg"
# One colour per engine, so the picture says which part of Ray does the work.
COLOURS = {
    "Ray Data": "#dbeafe",
    "Ray Train": "#fde68a",
    "Ray Serve": "#d1fae5",
    "files": "#f3f4f6",
    "report": "#fce7f3",
}
# (column, row, engine, title, detail)
BOXES = [
    (0, 0, "files", "datasets", "hub, s3://, jsonl,\nparquet, samples"),
    (1, 0, "Ray Data", "Ray Data: prepare", "canonical pairs,\ntokenize, filter,\nrejects.jsonl"),
    (2, 0, "Ray Train", "Ray Train: SFT", "DeepSpeed or DDP"),
    (3, 0, "Ray Train", "Ray Train: Oracle", "reward model\n(Eq. 4)"),
    (4, 0, "Ray Data", "Ray Data: score", "Oracle rewards,\nreference log-probs"),
    (4, 1, "Ray Train", "Ray Train: align", "DRDO (Eq. 5)\nor DPO, IPO, e-DPO"),
    (3, 1, "files", "models/", "Hugging Face\nfolders"),
    (2, 1, "Ray Serve", "Ray Data / Ray Serve", "sample at 4\ntemperatures\n(vLLM, transformers)"),
    (1, 1, "Ray Data", "win rates", "Oracle (Ray Data),\njudge (OpenAI API),\nKL, OOD bins"),
    (0, 1, "report", "report", "report.md\n+ figures"),
]
W, H, DX, DY = 2.3, 1.3, 2.85, 2.0  # box size and spacing, in axis units


def centre(col: int, row: int) -> tuple[float, float]:
    return col * DX + W / 2, -row * DY + H / 2


def draw(out: Path) -> None:
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "drdo-ray", "font.family": "sans-serif"})
    fig, ax = plt.subplots(figsize=(12, 5.2))
    for col, row, engine, title, detail in BOXES:
        x, y = col * DX, -row * DY
        ax.add_patch(
            FancyBboxPatch(
                (x, y), W, H, boxstyle="round,pad=0.05", facecolor=COLOURS[engine], edgecolor="#374151", lw=1
            )
        )
        ax.text(x + W / 2, y + H - 0.22, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(
            x + W / 2, y + (H - 0.35) / 2, detail, ha="center", va="center", fontsize=8.5, linespacing=1.25
        )
    arrow = {"arrowstyle": "-|>", "color": "#374151", "lw": 1.4, "shrinkA": 0, "shrinkB": 0}
    path = [(c, r) for c, r, *_ in BOXES]
    for (c1, r1), (c2, r2) in itertools.pairwise(path):
        (x1, y1), (x2, y2) = centre(c1, r1), centre(c2, r2)
        if r1 == r2:  # along a row: edge to edge
            step = W / 2 + 0.07
            start, end = (x1 + step * (1 if c2 > c1 else -1), y1), (x2 - step * (1 if c2 > c1 else -1), y2)
        else:  # down to the next row
            start, end = (x1, y1 - H / 2 - 0.07), (x2, y2 + H / 2 + 0.07)
        ax.annotate("", xy=end, xytext=start, arrowprops=arrow)
    ax.text(
        (4 * DX + W) / 2,
        -DY - 0.55,
        "every stage reads and writes one run directory (local or s3://): "
        "data/  scored/  train/  models/  samples/  eval/  report/",
        ha="center",
        va="center",
        fontsize=9,
        style="italic",
        color="#374151",
    )
    ax.set_xlim(-0.2, 4 * DX + W + 0.2)
    ax.set_ylim(-DY - 0.85, H + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
