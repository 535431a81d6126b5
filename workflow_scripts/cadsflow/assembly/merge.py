"""Progressive merge of the flavors' predictions into one label map per volume and group (Online Methods 2.5, 5.2).

The ranking (results/ranking/priority.tsv) chose a flavor per structure and measured its mean Dice. The merge
paints structures from least to most reliable, so that where predictions of different structures overlap, the
more reliable one wins:
1. merge units: every structure is a unit, except serially repeating ones (blocks.py: cervical, thoracic and
   lumbar vertebrae, all ribs), which are one unit each, taken from a single flavor (choose_block_flavor: among
   the flavors ranked first for some structure of the block, the one with the highest mean Dice over the block's
   structures);
2. units are painted in ascending order of mean Dice of their selected flavor; at equal Dice the unit with the
   larger share of ground truth in its training data is painted later (it wins); a last tie goes by name;
3. the volume's own exact ground truth replaces the prediction of each structure it has: that structure's
   predicted voxels take no part in the merge, and its ground-truth voxels are painted last, over everything.

A unit paints the voxels where its flavor's map holds one of its structures; later units overwrite earlier
ones; voxels no unit claims stay background. Everything here is pure numpy on arrays; volume.py does the files.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.assembly.blocks import Block
from cadsflow.assembly.provenance import GROUND_TRUTH, AssemblyRow, provenance_rows

PRIORITY_COLUMNS = ("structure", "group", "first")  # required; the rest: read_priority
DICE_FIRST = "mean_dice_first"
DICE_PREFIX = "mean_dice_"  # the ranking's mean_dice_<flavor> columns
GT_SHARE = "gt_share"


@dataclass(frozen=True)
class PriorityRow:
    """One structure's line of the ranking's priority table (the decision trail is not needed here)."""

    structure: str
    group: int
    first: str
    second: str
    third: str
    mean_dice_first: float  # mean Dice of the selected (first) flavor; NaN when unknown
    gt_share: float  # share of ground truth in the structure's training data
    flavor_dice: tuple[tuple[str, float], ...] = ()  # (flavor, mean Dice) of every ranked flavor, where known

    def dice_of(self, flavor: str) -> float:
        return dict(self.flavor_dice).get(flavor, math.nan)


@dataclass(frozen=True)
class MergeUnit:
    """Structures painted together from one flavor; ranked by mean Dice, then ground-truth share, then name."""

    name: str
    structures: tuple[str, ...]
    flavor: str
    mean_dice: float
    gt_share: float

    @property
    def sort_key(self) -> tuple[float, float, str]:
        return (_finite_or_lowest(self.mean_dice), _finite_or_lowest(self.gt_share), self.name)


def assemble(
    flavor_maps: Mapping[str, np.ndarray],
    priority: Sequence[PriorityRow],
    gt_map: np.ndarray | None,
    gt_structures: Collection[str],
    blocks: Sequence[Block],
    *,
    label_ids: Mapping[str, int],
    flavor_order: Sequence[str] = ("GT", "Pseudo", "Shape"),
    volume_id: str = "",
    voxel_ml: float = 0.0,
) -> tuple[np.ndarray, list[AssemblyRow]]:
    """One group's assembled label map of one volume and its provenance rows.

    flavor_maps: flavor name -> that flavor's label map (the group's label ids); priority: the group's rows;
    gt_map: the volume's ground truth in the group (ids as label_ids, `ignore` above them) or None;
    gt_structures: the structures that map holds exactly (only these override); label_ids: name -> id.
    """
    where = f"volume {volume_id!r}" if volume_id else "assembly"
    group = _single_group(priority, where)
    gt_structures = set(gt_structures) if gt_map is not None else set()
    _check_names(gt_structures, label_ids, f"{where} group {group}: ground-truth structures")
    _check_names([r.structure for r in priority], label_ids, f"{where} group {group}: priority structures")
    units = merge_order(priority, blocks, flavor_order)
    labels = paint_units(units, flavor_maps, label_ids, exclude=gt_structures, where=f"{where} group {group}")
    if gt_structures:
        labels = overlay_ground_truth(labels, gt_map, [label_ids[s] for s in sorted(gt_structures)],
                                      f"{where} group {group}")
    origin_of = {s: u.flavor for u in units for s in u.structures} | {s: GROUND_TRUTH for s in gt_structures}
    rows = provenance_rows(labels, label_ids, origin_of, volume_id=volume_id, group=group, voxel_ml=voxel_ml)
    return labels, rows


def merge_order(
    priority: Sequence[PriorityRow], blocks: Sequence[Block], flavor_order: Sequence[str]
) -> list[MergeUnit]:
    """The group's merge units in painting order (first painted first; the last one wins overlaps)."""
    by_name = {r.structure: r for r in priority}
    if len(by_name) != len(priority):
        raise ValueError("priority table lists a structure twice")
    units: list[MergeUnit] = []
    in_block: set[str] = set()
    for block in blocks:
        rows = [by_name[s] for s in block.structures if s in by_name]
        if rows:
            units.append(block_unit(block.name, rows, flavor_order))
            in_block.update(r.structure for r in rows)
    for row in priority:
        if row.structure not in in_block:
            _check_flavor(row.first, flavor_order, row.structure)
            units.append(MergeUnit(row.structure, (row.structure,), row.first, row.mean_dice_first, row.gt_share))
    return sorted(units, key=lambda u: u.sort_key)


def block_unit(name: str, rows: Sequence[PriorityRow], flavor_order: Sequence[str]) -> MergeUnit:
    """A block as one unit: its flavor (choose_block_flavor), ranked by that flavor's mean Dice over the block
    (block_dice; without per-flavor Dice: over the structures it is first for), and by the block's mean
    ground-truth share."""
    flavor = choose_block_flavor(rows, flavor_order)
    dice = block_dice(rows, _first_flavors(rows, flavor_order)).get(flavor)
    if dice is None:
        dice = _nanmean([r.mean_dice_first for r in rows if r.first == flavor])
    share = _nanmean([r.gt_share for r in rows])
    return MergeUnit(name, tuple(r.structure for r in rows), flavor, dice, share)


def choose_block_flavor(rows: Sequence[PriorityRow], flavor_order: Sequence[str]) -> str:
    """The block's single flavor: among the flavors ranked first for at least one of its structures (only those
    predict every volume: the flavor_predict stage runs the selected flavors), the one with the highest mean Dice
    over the block's structures (block_dice), so a flavor that wins many structures narrowly but misses others
    does not take the block; without per-flavor Dice (or a tie), the flavor first for most structures; then the
    higher mean Dice over the structures each is first for; then the flavor listed first in `flavor_order`."""
    for row in rows:
        _check_flavor(row.first, flavor_order, row.structure)
    candidates = _first_flavors(rows, flavor_order)
    over_block = block_dice(rows, candidates)
    counts = {f: sum(r.first == f for r in rows) for f in candidates}
    dice = {f: _finite_or_lowest(_nanmean([r.mean_dice_first for r in rows if r.first == f])) for f in candidates}
    return max(candidates, key=lambda f: (over_block.get(f, -math.inf), counts[f], dice[f],
                                          -flavor_order.index(f)))


def block_dice(rows: Sequence[PriorityRow], flavors: Sequence[str]) -> dict[str, float]:
    """Each flavor's mean Dice over the block's structures that every one of `flavors` has a Dice for (the same
    structures for all, so the means compare); empty when there is no such structure."""
    common = [r for r in rows if all(math.isfinite(r.dice_of(f)) for f in flavors)]
    if not common:
        return {}
    return {f: sum(r.dice_of(f) for r in common) / len(common) for f in flavors}


def _first_flavors(rows: Sequence[PriorityRow], flavor_order: Sequence[str]) -> list[str]:
    return [f for f in flavor_order if any(r.first == f for r in rows)]


def paint_units(
    units: Sequence[MergeUnit],
    flavor_maps: Mapping[str, np.ndarray],
    label_ids: Mapping[str, int],
    exclude: Collection[str] = (),
    where: str = "assembly",
) -> np.ndarray:
    """Paint the units in order: each voxel takes the label of the last unit whose flavor map claims it for one
    of the unit's structures (structures in `exclude` claim nothing)."""
    n_ids = max(label_ids.values(), default=0) + 1
    rank_luts: dict[str, np.ndarray] = {}
    for position, unit in enumerate(units):
        lut = rank_luts.setdefault(unit.flavor, np.full(n_ids, -1, dtype=np.int32))
        for structure in unit.structures:
            if structure not in exclude:
                lut[label_ids[structure]] = position
    if not rank_luts:
        raise ValueError(f"{where}: nothing to merge (no merge units)")
    maps = {f: _checked_map(flavor_maps, f, n_ids, where) for f in rank_luts}
    shapes = {m.shape for m in maps.values()}
    if len(shapes) != 1:
        raise ValueError(f"{where}: flavor maps differ in shape: { {f: m.shape for f, m in maps.items()} }")
    shape = shapes.pop()
    labels = np.zeros(shape, dtype=np.uint8 if n_ids <= 256 else np.uint16)
    best = np.full(shape, -1, dtype=np.int32)  # merge position of the unit that holds each voxel so far
    for flavor, lut in rank_luts.items():  # flavor by flavor: one map in memory at a time beside the result
        rank = lut[maps[flavor]]
        wins = rank > best
        labels[wins] = maps[flavor][wins]
        best[wins] = rank[wins]
    return labels


def overlay_ground_truth(labels: np.ndarray, gt_map: np.ndarray, gt_ids: Sequence[int], where: str) -> np.ndarray:
    """Paint the ground truth's voxels of the given ids over the merged labels (last, over everything)."""
    if gt_map.shape != labels.shape:
        raise ValueError(f"{where}: ground truth has shape {gt_map.shape}, the flavor maps {labels.shape}")
    mask = np.isin(gt_map, gt_ids)
    out = labels.copy()
    out[mask] = gt_map[mask]
    return out


def missing_structures(priority: Sequence[PriorityRow], label_ids: Mapping[str, int]) -> list[str]:
    """Structures of the group's label map without a priority row (in label-id order)."""
    listed = {r.structure for r in priority}
    return sorted((s for s in label_ids if s not in listed), key=label_ids.get)


def read_priority(
    path: str | Path, group: int | None = None, gt_shares: Mapping[str, float] | None = None
) -> list[PriorityRow]:
    """The priority table's rows (of one group if given); raise naming the file on a missing column or value.

    The selected flavor's mean Dice is the column `mean_dice_first`, or else the ranking's `mean_dice_<flavor>`
    of the row's first flavor (what cadsflow.ranking writes); every `mean_dice_<flavor>` column also goes to the
    row's flavor_dice (the block flavor's choice). The ground-truth share is the column `gt_share`,
    else `gt_shares[structure]`, else unknown (NaN: lowest, so an equal-Dice tie then goes by name).
    """
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = reader.fieldnames or []
        missing = [c for c in PRIORITY_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{path}: priority table lacks columns {missing}")
        flavor_columns = [c for c in columns if c.startswith(DICE_PREFIX) and c != DICE_FIRST]
        rows = []
        for line, r in enumerate(reader, start=2):
            if group is not None and r["group"].strip() != str(group):
                continue
            try:
                first = r["first"].strip()
                dice = r.get(DICE_FIRST) if DICE_FIRST in columns else r.get(f"mean_dice_{first}")
                if dice is None:
                    raise ValueError(f"no {DICE_FIRST} column and no mean_dice_{first} column for flavor {first!r}")
                share = r[GT_SHARE] if GT_SHARE in columns else (gt_shares or {}).get(r["structure"].strip(), "")
                per_flavor = tuple((c[len(DICE_PREFIX):], _float(r[c])) for c in flavor_columns)
                rows.append(PriorityRow(r["structure"].strip(), int(r["group"]), first, (r.get("second") or "").strip(),
                                        (r.get("third") or "").strip(), _float(dice), _float(str(share)),
                                        per_flavor))
            except (TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}:{line}: cannot parse priority row ({exc})") from None
    if group is not None and not rows:
        raise ValueError(f"{path}: no priority rows for group {group}")
    return rows


def read_gt_shares(path: str | Path) -> dict[str, float]:
    """A TSV with columns structure, gt_share (for priority tables that do not carry the share)."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not {"structure", GT_SHARE} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected columns structure, {GT_SHARE}")
        try:
            return {r["structure"].strip(): _float(r[GT_SHARE]) for r in reader}
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _checked_map(flavor_maps: Mapping[str, np.ndarray], flavor: str, n_ids: int, where: str) -> np.ndarray:
    if flavor not in flavor_maps:
        raise KeyError(f"{where}: the ranking selected flavor {flavor!r}, but its prediction is missing "
                       f"(have {sorted(flavor_maps)})")
    data = np.asarray(flavor_maps[flavor])
    if data.dtype.kind not in "iu":
        raise ValueError(f"{where}: flavor {flavor!r} map has dtype {data.dtype}; expected integer labels")
    if data.size and (data.min() < 0 or data.max() >= n_ids):
        raise ValueError(f"{where}: flavor {flavor!r} map holds values outside 0..{n_ids - 1}")
    return data


def _single_group(priority: Sequence[PriorityRow], where: str) -> int:
    groups = {r.group for r in priority}
    if len(groups) != 1:
        raise ValueError(f"{where}: priority rows must be of one group, got {sorted(groups)}")
    return groups.pop()


def _check_names(names: Collection[str], label_ids: Mapping[str, int], what: str) -> None:
    unknown = sorted(set(names) - set(label_ids))
    if unknown:
        raise ValueError(f"{what} {unknown} are not in the group's label map")


def _check_flavor(flavor: str, flavor_order: Sequence[str], structure: str) -> None:
    if flavor not in flavor_order:
        raise ValueError(f"structure {structure!r}: first flavor {flavor!r} is not one of {list(flavor_order)}")


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _finite_or_lowest(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _float(text: str | None) -> float:
    text = (text or "").strip()
    return float(text) if text and text.lower() not in ("na", "nan") else math.nan
