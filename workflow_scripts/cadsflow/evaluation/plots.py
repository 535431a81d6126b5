"""Figures of the evaluation report (paper Figures 3-4, A.9-A.11), as PNG files via matplotlib's Agg backend.

- ``radar_plot``: per-structure mean Dice of the model and the systems it is compared with around a circle;
- ``dataset_bars``: per-dataset mean Dice and HD95, the model next to the other systems;
- ``difference_bubbles``: per structure, model - other system Dice difference (y), bubble area from the HD95
  difference, colour from the paired test's verdict; one panel per system the model is compared with (the
  specialists, the baseline).
Each takes the tables of statistics.py and a path, and writes atomically.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cadsflow.atomic import atomic_path  # noqa: E402
from cadsflow.evaluation.statistics import BASELINE, MODEL  # noqa: E402

COLOURS = {MODEL: "#1b9e77", BASELINE: "#7570b3"}
OTHER_COLOURS = ("#e7298a", "#66a61e", "#e6ab02", "#a6761d")  # further systems (e.g. the specialists), in order
WORSE_COLOUR, NOT_SIGNIFICANT_COLOUR = "#d95f02", "#999999"
DPI = 120


def colour_of(system: str, systems) -> str:
    """A system's colour: the model's and the baseline's are fixed, others take the palette in their order."""
    if system in COLOURS:
        return COLOURS[system]
    others = [s for s in systems if s not in COLOURS]
    return OTHER_COLOURS[others.index(system) % len(OTHER_COLOURS)] if system in others else OTHER_COLOURS[0]


def radar_plot(structures: pd.DataFrame, path, metric: str = "dice", systems=(MODEL, BASELINE)) -> None:
    """`structures`: statistics.summarize(by=["system", "structure"]). Structures that every plotted system has."""
    table = structures[structures["metric"] == metric].pivot_table(index="structure", columns="system", values="mean")
    present = [s for s in systems if s in table.columns]
    table = table[present].dropna() if present else table
    fig = plt.figure(figsize=(9, 9))
    ax = fig.add_subplot(projection="polar")
    if table.empty:
        _notice(ax, f"no structure with a {metric} score for {', '.join(systems)}")
    else:
        angles = np.linspace(0, 2 * np.pi, len(table), endpoint=False)
        closed = np.append(angles, angles[:1])
        for system in present:
            values = table[system].to_numpy()
            colour = colour_of(system, systems)
            ax.plot(closed, np.append(values, values[:1]), color=colour, lw=1.2, label=system)
            ax.fill(closed, np.append(values, values[:1]), color=colour, alpha=0.1)
        ax.set_xticks(angles)
        ax.set_xticklabels(table.index, fontsize=max(3, 9 - len(table) // 20))
        ax.set_ylim(0, 1 if metric in ("dice", "nsd") else None)
        ax.legend(loc="upper right", bbox_to_anchor=(1.15, 1.1))
    ax.set_title(f"Mean {metric} per structure", pad=30)
    _save(fig, path)


def dataset_bars(datasets: pd.DataFrame, path, metrics=("dice", "hd95"), systems=(MODEL, BASELINE)) -> None:
    """`datasets`: statistics.summarize(by=["system", "source"])."""
    width = max(6, 1.2 * datasets["source"].nunique() + 3)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 3.5 * len(metrics)))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics):
        table = datasets[datasets["metric"] == metric].pivot_table(index="source", columns="system", values="mean")
        present = [s for s in systems if s in table.columns]
        if table.empty or not present:
            _notice(ax, f"no {metric} scores")
            continue
        x = np.arange(len(table))
        width = 0.8 / len(present)
        for i, system in enumerate(present):
            ax.bar(x + (i - (len(present) - 1) / 2) * width, table[system].to_numpy(), width, label=system,
                   color=colour_of(system, systems))  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels(table.index, rotation=30, ha="right")
        ax.set_ylabel(f"{metric.upper()} (mm)" if metric.startswith("hd") else metric.capitalize())
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Per-dataset scores")
    _save(fig, path)


def difference_bubbles(comparison: pd.DataFrame, path, model: str = MODEL, versus=(BASELINE,)) -> None:
    """`comparison`: statistics.compare_systems (column `versus`). One panel per system in `versus` that it holds,
    one bubble per structure."""
    present = [v for v in versus if v in set(comparison["versus"])]
    fig, axes = plt.subplots(max(1, len(present)), 1, figsize=(12, 5 * max(1, len(present))), squeeze=False)
    if not present:
        _notice(axes[0, 0], "no structure scored by the model and another system: no differences to show")
    for ax, other in zip(axes[:, 0], present):
        _bubbles(ax, comparison[comparison["versus"] == other], model, other)
    _save(fig, path)


def _bubbles(ax, comparison: pd.DataFrame, model: str, other: str) -> None:
    dice = comparison[comparison["metric"] == "dice"].set_index("structure")
    hd95 = comparison[comparison["metric"] == "hd95"].set_index("structure")
    x = np.arange(len(dice))
    size_mm = hd95["delta"].reindex(dice.index).abs().fillna(0).to_numpy()
    sizes = 20 + 400 * size_mm / max(float(size_mm.max()), 1e-9)
    colours = np.where(dice["better"] == model, COLOURS[MODEL],
                       np.where(dice["better"] == other, WORSE_COLOUR, NOT_SIGNIFICANT_COLOUR))  # fmt: skip
    ax.scatter(x, 100 * dice["delta"].to_numpy(), s=sizes, c=colours, alpha=0.7, edgecolors="k", linewidths=0.3)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(dice.index, rotation=90, fontsize=max(3, 8 - len(dice) // 30))
    ax.set_ylabel(f"Dice difference, {model} - {other} (% points)")
    ax.set_title(f"{model} vs {other}: per-structure differences (bubble area: |HD95 difference|; green: {model} "
                 f"significantly better, orange: {other} significantly better)", fontsize=9)  # fmt: skip


def _notice(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _save(fig, path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
