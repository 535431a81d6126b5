"""The dataset card of the assembled labels (Supplementary Tables A.4 and A.5): TSV tables and one HTML page.

- structures.tsv (Table A.5): per structure its occurrence (volumes whose assembled map holds it) and its median
  volume in ml over those volumes, with the volumes in which it came from the volume's own ground truth;
- training_images.tsv (Table A.4): per group the training image counts of each stage (specialists, the GT,
  Pseudo and Shape flavors, the final model), given as input: counts, or nnU-Net dataset.json files (numTraining);
- origins.tsv: per group and over all groups, the voxels and share of each origin (ground_truth, the flavors,
  rib_repair);
- summary.tsv: volumes with an assembled map, quarantined volumes (no map), groups;
- files.tsv: where each volume's files are, one row per volume and group: volume_id, group, batch, label_map
  (results/assembled/<group>/<batch>/<volume_id>.nii.gz; empty when quarantined) and provenance (the
  <volume_id>.provenance.tsv beside it), so a user finds any map in one step at 22,022 volumes;
- card.html: the tables on one page for the Snakemake report.
Everything is computed from the assembly's provenance rows (voxel counts and ml), not from the images; quarantine
and empty-map lines count only in the summary.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from cadsflow.assembly.provenance import GROUND_TRUTH, AssemblyRow
from cadsflow.atomic import atomic_path
from cadsflow.labels import LabelSpace, load_label_space

STAGES = ("specialists", "GT", "Pseudo", "Shape", "final")  # Table A.4's rows, in its order
CARD_FILES = {"structures": "structures.tsv", "training": "training_images.tsv", "origins": "origins.tsv",
              "summary": "summary.tsv", "files": "files.tsv", "page": "card.html"}
ASSEMBLED_ROOT = "results/assembled"  # <root>/<group>/<batch>/<volume_id>.nii.gz (rules/assembly_lookups.smk AS_DIR)
FILE_COLUMNS = ("volume_id", "group", "batch", "label_map", "provenance")
ALL_GROUPS = "all"


def structure_table(rows: Iterable[AssemblyRow], space: LabelSpace | None = None) -> pd.DataFrame:
    """Per structure of the label space: occurrence, median ml (NaN if never present), ground-truth volumes."""
    space = space or load_label_space()
    per_volume = _per_volume(rows)
    present = per_volume[per_volume["n_voxels"] > 0]
    stats = present.groupby("structure").agg(occurrence=("volume_id", "nunique"), median_ml=("ml", "median"),
                                             median_voxels=("n_voxels", "median"),
                                             n_ground_truth=("from_ground_truth", "sum"))
    table = pd.DataFrame([{"group": s.group, "structure": s.name, "display_name": s.display_name}
                          for s in space.structures])
    table = table.merge(stats, how="left", left_on="structure", right_index=True)
    table[["occurrence", "n_ground_truth"]] = table[["occurrence", "n_ground_truth"]].fillna(0).astype(int)
    return table.reset_index(drop=True)


def origin_table(rows: Iterable[AssemblyRow]) -> pd.DataFrame:
    """Per group (and `all`): voxels of each origin and their share of the group's labelled voxels."""
    frame = _frame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["group", "origin", "n_voxels", "share"])
    by_group = frame.groupby(["group", "origin"], as_index=False)["n_voxels"].sum()
    overall = frame.groupby("origin", as_index=False)["n_voxels"].sum().assign(group=ALL_GROUPS)
    table = pd.concat([by_group.astype({"group": str}), overall], ignore_index=True)
    table["share"] = table["n_voxels"] / table.groupby("group")["n_voxels"].transform("sum")
    return table[["group", "origin", "n_voxels", "share"]]


def summary_table(rows: Iterable[AssemblyRow]) -> pd.DataFrame:
    """Counts of the card: volumes with an assembled map (in at least one group), quarantined volumes, groups."""
    rows = list(rows)
    assembled = {r.volume_id for r in rows if r.assembled}
    quarantined = {r.volume_id for r in rows if not r.assembled} - assembled
    items = [("assembled_volumes", len(assembled)), ("quarantined_volumes", len(quarantined)),
             ("groups", len({r.group for r in rows}))]
    return pd.DataFrame(items, columns=["item", "count"])


def file_table(batches: Mapping[str, Iterable[AssemblyRow]], maps_root: str | Path = ASSEMBLED_ROOT) -> pd.DataFrame:
    """One row per volume and group of each batch's provenance rows: where its assembled map and provenance file
    are (`label_map` empty for a quarantined volume, which has no map), sorted by volume and group."""
    root = Path(maps_root)
    entries = {}
    for batch, rows in batches.items():
        for r in rows:
            key = (r.volume_id, int(r.group))
            folder = root / str(r.group) / str(batch)
            has_map = entries.get(key, {}).get("label_map", "") != "" or r.assembled
            entries[key] = {"volume_id": r.volume_id, "group": int(r.group), "batch": str(batch),
                            "label_map": str(folder / f"{r.volume_id}.nii.gz") if has_map else "",
                            "provenance": str(folder / f"{r.volume_id}.provenance.tsv")}
    return pd.DataFrame([entries[k] for k in sorted(entries)], columns=list(FILE_COLUMNS))


def training_table(counts: Mapping[str, Mapping[int, int]], groups: Sequence[int]) -> pd.DataFrame:
    """Table A.4: one row per stage (in STAGES order, then any other), one column per group; blank if unknown."""
    unknown = [s for s in counts if s not in STAGES]
    stages = [s for s in STAGES if s in counts] + unknown
    data = [{"stage": s, **{str(g): counts[s].get(g) for g in groups}} for s in stages]
    table = pd.DataFrame(data, columns=["stage", *[str(g) for g in groups]])
    return table.astype({str(g): "Int64" for g in groups})  # whole counts; unknown ones stay blank


def training_counts_from_datasets(datasets: Iterable[tuple[str, int, str | Path]]) -> dict[str, dict[int, int]]:
    """(stage, group, nnU-Net dataset.json) -> counts, from each dataset's numTraining."""
    counts: dict[str, dict[int, int]] = {}
    for stage, group, path in datasets:
        try:
            n = int(json.loads(Path(path).read_text())["numTraining"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: cannot read numTraining of the {stage} dataset of group {group} "
                             f"({exc})") from None
        counts.setdefault(stage, {})[int(group)] = n
    return counts


def read_training_counts(path: str | Path) -> dict[str, dict[int, int]]:
    """A long TSV with columns stage, group, n_images."""
    frame = pd.read_csv(path, sep="\t")
    missing = {"stage", "group", "n_images"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: training counts lack columns {sorted(missing)}")
    counts: dict[str, dict[int, int]] = {}
    for r in frame.itertuples(index=False):
        counts.setdefault(str(r.stage), {})[int(r.group)] = int(r.n_images)
    return counts


def write_card(
    rows: Sequence[AssemblyRow],
    training_counts: Mapping[str, Mapping[int, int]],
    out_dir: str | Path,
    space: LabelSpace | None = None,
    batches: Mapping[str, Iterable[AssemblyRow]] | None = None,
    maps_root: str | Path | None = None,
) -> dict[str, Path]:
    """Write the card's tables and page into out_dir; return their paths. `batches` (batch -> its provenance rows)
    fills files.tsv with the maps under `maps_root` (default results/assembled); without it the table is empty."""
    space = space or load_label_space()
    out = Path(out_dir)
    tables = {
        "structures": structure_table(rows, space),
        "training": training_table(training_counts, space.groups),
        "origins": origin_table(rows),
        "summary": summary_table(rows),
        "files": file_table(batches or {}, maps_root or ASSEMBLED_ROOT),
    }
    paths = {key: out / name for key, name in CARD_FILES.items()}
    for key, table in tables.items():
        with atomic_path(paths[key]) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    counts = dict(zip(tables["summary"]["item"], tables["summary"]["count"]))
    with atomic_path(paths["page"]) as tmp:
        tmp.write_text(card_page(tables, counts["assembled_volumes"], counts["quarantined_volumes"]))
    return paths


def card_page(tables: Mapping[str, pd.DataFrame], n_volumes: int, n_quarantined: int = 0) -> str:
    sections = [
        ("Training images per group and stage (Table A.4)", tables["training"]),
        ("Share of each origin in the assembled labels", tables["origins"]),
        ("Structures: occurrence and median volume (Table A.5)", tables["structures"]),
    ]
    body = "\n".join(f"<h2>{html.escape(title)}</h2>\n{_display(table).to_html(index=False)}"
                     for title, table in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>CADS dataset card</title></head><body>\n"
            f"<h1>Dataset card: {n_volumes} assembled volumes</h1>\n"
            f"<p>{n_quarantined} quarantined volumes (no assembled map).</p>\n{body}\n</body></html>\n")


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: 4 significant digits for fractional numbers, blank for unknown values."""
    def cell(value):
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return table.astype(object).map(cell)


def _frame(rows: Iterable[AssemblyRow]) -> pd.DataFrame:
    """The structures' rows (quarantine and empty-map lines left out) as a table."""
    return pd.DataFrame([r.__dict__ for r in rows if r.has_structure],
                        columns=["volume_id", "group", "structure", "origin", "n_voxels", "ml"])


def _per_volume(rows: Iterable[AssemblyRow]) -> pd.DataFrame:
    """One line per volume and structure: voxels and ml over all origins, and whether it is ground truth."""
    frame = _frame(rows)
    frame["from_ground_truth"] = frame["origin"] == GROUND_TRUTH
    return frame.groupby(["volume_id", "structure"], as_index=False).agg(
        n_voxels=("n_voxels", "sum"), ml=("ml", "sum"), from_ground_truth=("from_ground_truth", "any"))
