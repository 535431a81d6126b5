"""A Supplementary Fig. A.8-like chart of the flavor selection: structures x flavors, the chosen flavor marked.

Each row is a structure (grouped by its group, in the priority table's order), each column a flavor. A cell's
colour is the flavor's mean primary metric (Dice) on the split the ranking used; its text is the flavor's place
in the priority order (1, 2, 3); the chosen (first) flavor is outlined and starred. Cells of flavors without
scores stay grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.ranking.algorithm import RankingSettings
from cadsflow.ranking.tables import ORDINALS

ROW_HEIGHT_IN = 0.24
MIN_HEIGHT_IN = 3.0
WIDTH_IN = 6.0
DPI = 120
COLORMAP = "viridis"


@dataclass(frozen=True)
class HeatmapData:
    rows: list[str]  # "<group> / <structure>"
    flavors: tuple[str, ...]
    values: np.ndarray  # rows x flavors, mean primary metric (NaN: no scores)
    places: np.ndarray  # rows x flavors, 1-based place in the priority order
    chosen: np.ndarray  # rows, column index of the first flavor


def plot_priority(priority: pd.DataFrame, out: str | Path, settings: RankingSettings) -> HeatmapData:
    """Draw the chart of a priority table (tables.read_priority) into a PNG, atomically; return what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = heatmap_data(priority, settings)
    height = max(MIN_HEIGHT_IN, ROW_HEIGHT_IN * len(data.rows) + 1.5)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, height))
    cmap = plt.get_cmap(COLORMAP).copy()
    cmap.set_bad("lightgrey")
    image = ax.imshow(np.ma.masked_invalid(data.values), cmap=cmap, aspect="auto", vmin=_vmin(data.values),
                      vmax=_vmax(data.values))
    for r in range(len(data.rows)):
        for c in range(len(data.flavors)):
            chosen = c == data.chosen[r]
            label = f"{data.places[r, c]}\u2605" if chosen else str(data.places[r, c])
            colour = image.cmap(image.norm(data.values[r, c])) if np.isfinite(data.values[r, c]) else (1, 1, 1, 1)
            ax.text(c, r, label, ha="center", va="center", fontsize=8, color=_text_colour(colour),
                    fontweight="bold" if chosen else "normal")
        ax.add_patch(plt.Rectangle((data.chosen[r] - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xticks(range(len(data.flavors)), data.flavors)
    ax.set_yticks(range(len(data.rows)), data.rows, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_title("Flavor selection per structure (\u2605: chosen; numbers: priority)", fontsize=9, pad=24)
    fig.colorbar(image, ax=ax, label=f"mean {settings.primary_metric}", shrink=min(1.0, 6.0 / height))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return data


def heatmap_data(priority: pd.DataFrame, settings: RankingSettings) -> HeatmapData:
    """Rows, colours, places and chosen columns of the chart, from a priority table."""
    flavors = settings.flavors
    ordinals = ORDINALS[:len(flavors)]
    column = {f: i for i, f in enumerate(flavors)}
    rows, values, places, chosen = [], [], [], []
    for _, row in priority.iterrows():
        rows.append(f"{row['group']} / {row['structure']}")
        values.append([float(row[f"mean_{settings.primary_metric}_{f}"]) for f in flavors])
        order = [row[o] for o in ordinals]
        places.append([order.index(f) + 1 for f in flavors])
        chosen.append(column[order[0]])
    shape = (len(rows), len(flavors))
    return HeatmapData(rows, flavors, np.array(values, dtype=float).reshape(shape),
                       np.array(places, dtype=int).reshape(shape), np.array(chosen, dtype=int))


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance, ITU-R BT.709 weights)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def _vmin(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else 0.0


def _vmax(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > finite.min() else _vmin(values) + 1.0
