"""Assembly of one volume (or a batch) of one group from files: flavors' predictions + ground truth -> label map.

Per volume and group (written atomically):
- {out_dir}/{volume_id}.nii.gz: the assembled label map (the group's label ids, uint8) on the standardized grid;
- {out_dir}/{volume_id}.provenance.tsv: structure, origin (ground_truth / flavor / rib_repair), voxels, ml.
A batch job (one per batch of volumes, all groups: __main__.py) also writes one provenance table of all its volumes
and groups, which is what the dataset card reads.

Inputs: the flavors' predictions `{flavor_dir}/{volume_id}.nii.gz` (label maps of the group on the standardized
grid; a flavor's maps may lie in several folders, one per prediction job, which cadsflow.layout.MapIndex lists
once per batch); the ranking's priority rows of the group; the volume's ground truth folder of the gt stage
(results/gt/<batch>/<volume_id>/: group_<G>.nii.gz and provenance.tsv), where only structures with an exact
origin (cadsflow.gt.provenance.EXACT_ORIGINS) and voxels override; `ignore` and coarse unions override nothing.
The rib group (config ribs.group) is then refined (ribs.py) with the spine from the volume's assembled spine group
and a tubular map: an external one (ribs.tubular_map) or the vesselness of the standardized CT.

A quarantined volume (its standardization record is not `ok`) gets one provenance line per group saying so and no
map. Resume after a kill: each map carries in its NIfTI header (`descrip`) the fingerprint of what it was made
from (sha256 of the flavors' prediction files, the ground truth files, the group's priority rows, blocks and flavor
order, and for the rib group the rib settings, the spine map's own fingerprint and the CT or tubular map: see
`fingerprint_parts`), as cadsflow.pseudolabel.infer does for pseudo-labels. A rerun of an interrupted batch (its
running marker is still there, __main__.py) keeps a volume whose map carries the current fingerprint and reads its
rows back from its provenance file. The provenance file is written before the map, so a map with the current
fingerprint always has the provenance of the same assembly next to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.assembly.blocks import Block, structures_matching
from cadsflow.assembly.merge import PriorityRow, assemble, missing_structures
from cadsflow.assembly.provenance import (
    AssemblyRow,
    provenance_rows,
    quarantine_row,
    read_provenance,
    write_provenance,
)
from cadsflow.assembly.ribs import RibSettings, refine_ribs, tubular_map
from cadsflow.gt.provenance import EXACT_ORIGINS, read_provenance as read_gt_provenance
from cadsflow.imageio import read_volume
from cadsflow.layout import MapFolders, MapIndex
from cadsflow.pseudolabel.infer import file_digest, fingerprint, save_label_map, stored_fingerprint
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.validate import GRID_TOLERANCE_MM

log = logging.getLogger(__name__)

# a flavor's prediction folder, its folders (one per prediction job), or their index
FlavorMaps = MapFolders | MapIndex


@dataclass(frozen=True)
class RibInputs:
    """What the rib refinement of one volume reads: the assembled spine group's map and a tubular source."""

    spine_map: Path
    image: Path | None = None  # the standardized CT, for the vesselness map
    tubular_map: Path | None = None  # an external tubular map (wins over the image)


def assemble_volume(
    volume_id: str,
    group: int,
    flavor_dirs: Mapping[str, FlavorMaps],
    priority: Sequence[PriorityRow],
    gt_dir: str | Path | None,
    out_dir: str | Path,
    blocks: Sequence[Block],
    flavor_order: Sequence[str],
    rib_settings: RibSettings = RibSettings(),
    rib_inputs: RibInputs | None = None,
    space: LabelSpace | None = None,
    resume: bool = False,
) -> list[AssemblyRow]:
    """Assemble, refine ribs where the group is the rib group, write map and provenance; return the rows.

    With `resume`, a map that already carries the current fingerprint is kept and its provenance read back."""
    space = space or load_label_space()
    label_ids = space.group_label_map(group)
    missing = missing_structures(priority, label_ids)
    if missing:
        raise ValueError(f"volume {volume_id} group {group}: the priority table has no row for {missing}; "
                         f"every structure of the group needs a selected flavor")
    used = sorted({r.first for r in priority})  # a block's flavor is always one of its structures' first flavors
    paths = _flavor_paths(volume_id, flavor_dirs, used)
    is_rib_group = group == rib_settings.group
    if is_rib_group and rib_inputs is None:
        raise ValueError(f"volume {volume_id}: group {rib_settings.group} is the rib group; its refinement needs the "
                         f"assembled spine map (group {rib_settings.spine_group}) and a CT or tubular map")
    out = Path(out_dir)
    map_path, provenance_path = out / f"{volume_id}.nii.gz", out / f"{volume_id}.provenance.tsv"
    stamp = fingerprint(fingerprint_parts(group, paths, priority, gt_dir, blocks, flavor_order,
                                          rib_settings if is_rib_group else None, rib_inputs if is_rib_group else None))
    if resume:
        kept = _kept_rows(map_path, provenance_path, stamp)
        if kept is not None:
            log.info("%s group %d: kept from the interrupted run (same fingerprint)", volume_id, group)
            return kept
    flavor_maps, affine = _read_flavor_maps(volume_id, paths)
    gt_map, gt_names = read_volume_gt(volume_id, gt_dir, group, next(iter(flavor_maps.values())).shape, affine)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    labels, rows = assemble(flavor_maps, priority, gt_map, gt_names, blocks, label_ids=label_ids,
                            flavor_order=flavor_order, volume_id=volume_id, voxel_ml=voxel_ml)
    if is_rib_group:
        labels, rows = _refine_volume_ribs(volume_id, labels, rows, affine, rib_settings, rib_inputs, space,
                                           voxel_ml)
    write_provenance(rows, provenance_path)  # before the map: the map (and its fingerprint) is the commit point
    save_label_map(labels.astype(np.uint8), affine, map_path, stamp)
    return rows


def assemble_batch(
    volume_ids: Sequence[str],
    group: int,
    flavor_dirs: Mapping[str, FlavorMaps],
    priority: Sequence[PriorityRow],
    gt_dirs: Sequence[str | Path | None],
    out_dir: str | Path,
    blocks: Sequence[Block],
    flavor_order: Sequence[str],
    rib_settings: RibSettings = RibSettings(),
    rib_inputs: Sequence[RibInputs] | None = None,
    space: LabelSpace | None = None,
    batch_provenance: str | Path | None = None,
    quarantined: Mapping[str, str] | None = None,
    resume: bool = False,
) -> list[AssemblyRow]:
    """assemble_volume for each volume (gt_dirs and rib_inputs aligned with volume_ids); the rows of all, also
    written as one table when batch_provenance is given. `quarantined` maps a volume id to the reason it has no
    standardized image: it gets a quarantine line and no map (a map of an earlier run is removed)."""
    if len(gt_dirs) != len(volume_ids) or (rib_inputs is not None and len(rib_inputs) != len(volume_ids)):
        raise ValueError(f"group {group}: {len(volume_ids)} volumes but {len(gt_dirs)} gt folders and "
                         f"{len(rib_inputs or [])} rib inputs; they must be aligned")
    quarantined = quarantined or {}
    flavor_dirs = flavor_indexes(flavor_dirs)  # one listing per folder for the whole batch
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the job's declared folder, even when it writes no map
    rows: list[AssemblyRow] = []
    for k, volume_id in enumerate(volume_ids):
        if volume_id in quarantined:
            rows += write_quarantined(volume_id, group, quarantined[volume_id], out_dir)
            log.info("%s group %d: quarantined, no map (%s)", volume_id, group, quarantined[volume_id])
            continue
        ribs = rib_inputs[k] if rib_inputs is not None else None
        rows += assemble_volume(volume_id, group, flavor_dirs, priority, gt_dirs[k], out_dir, blocks, flavor_order,
                                rib_settings, ribs, space, resume)
        log.info("%s group %d: assembled", volume_id, group)
    if batch_provenance is not None:
        write_provenance(rows, batch_provenance)
    return rows


def flavor_indexes(flavor_dirs: Mapping[str, FlavorMaps]) -> dict[str, MapIndex]:
    """Flavor -> index of its maps over the folders given for it (one folder or a list of job folders)."""
    return {flavor: MapIndex.of(maps) for flavor, maps in flavor_dirs.items()}


def write_quarantined(volume_id: str, group: int, reason: str, out_dir: str | Path) -> list[AssemblyRow]:
    """The quarantine line of a volume as its provenance file; no map (one left by an earlier run is removed)."""
    out = Path(out_dir)
    rows = [quarantine_row(volume_id, group, reason)]
    (out / f"{volume_id}.nii.gz").unlink(missing_ok=True)
    write_provenance(rows, out / f"{volume_id}.provenance.tsv")
    return rows


def fingerprint_parts(
    group: int,
    flavor_paths: Mapping[str, Path],
    priority: Sequence[PriorityRow],
    gt_dir: str | Path | None,
    blocks: Sequence[Block],
    flavor_order: Sequence[str],
    rib_settings: RibSettings | None = None,
    rib_inputs: RibInputs | None = None,
) -> dict:
    """What an assembled map is made from, as digests and settings (cadsflow.pseudolabel.infer.fingerprint hashes
    it). The spine map enters by its own fingerprint (its content's sources), else by its file digest."""
    parts = {
        "group": group,
        "flavors": {f: _digest(p) for f, p in sorted(flavor_paths.items())},
        "priority": sorted(repr(r) for r in priority),
        "blocks": [repr(b) for b in blocks],
        "flavor_order": list(flavor_order),
        "gt": _gt_digests(gt_dir, group),
    }
    if rib_settings is not None:
        parts["ribs"] = repr(rib_settings)
    if rib_inputs is not None:
        spine = rib_inputs.spine_map
        parts["spine"] = stored_fingerprint(spine) or _digest(spine)
        parts["tubular"] = _digest(rib_inputs.tubular_map) if rib_inputs.tubular_map is not None else None
        parts["image"] = _digest(rib_inputs.image) if rib_inputs.tubular_map is None and rib_inputs.image else None
    return parts


def read_volume_gt(volume_id: str, gt_dir: str | Path | None, group: int, shape, affine):
    """(the group's ground-truth map or None, the structures it holds exactly with voxels)."""
    if gt_dir is None:
        return None, set()
    gt_dir = Path(gt_dir)
    path = gt_dir / f"group_{group}.nii.gz"
    if not path.is_file():  # the volume has no exact ground truth in this group (or none at all)
        return None, set()
    provenance = gt_dir / "provenance.tsv"
    if not provenance.is_file():
        raise FileNotFoundError(f"volume {volume_id}: {path} exists but {provenance} is missing")
    names = {r.structure for r in read_gt_provenance(provenance)
             if r.group == group and r.origin in EXACT_ORIGINS and r.n_voxels > 0}
    gt = read_volume(path)
    _check_grid(volume_id, path, gt.data.shape, gt.affine, shape, affine)
    return gt.data, names


def _refine_volume_ribs(volume_id, labels, rows, affine, settings: RibSettings, inputs: RibInputs,
                        space: LabelSpace, voxel_ml: float):
    label_ids = space.group_label_map(settings.group)
    rib_ids = [label_ids[n] for n in structures_matching(space, settings.group, settings.rib_pattern)]
    spine = read_volume(inputs.spine_map)
    _check_grid(volume_id, inputs.spine_map, spine.data.shape, spine.affine, labels.shape, affine)
    spine_mask = np.asarray(spine.data) > 0
    tubular = _tubular(volume_id, inputs, spine_mask, labels.shape, affine, settings)
    result = refine_ribs(labels, rib_ids, spine_mask, tubular, settings)
    log.info("%s: ribs refined: %d voxels relabelled (fragments), %d joint components (%d voxels added)",
             volume_id, result.fragments_relabelled, len(result.joints), result.joint_voxels)
    origin_of = {r.structure: r.origin for r in rows}
    refined_rows = provenance_rows(result.labels, label_ids, origin_of, volume_id=volume_id, group=settings.group,
                                   voxel_ml=voxel_ml, before_repair=labels)
    return result.labels, refined_rows


def _tubular(volume_id, inputs: RibInputs, spine: np.ndarray, shape, affine, settings: RibSettings) -> np.ndarray:
    if inputs.tubular_map is not None:
        tub = read_volume(inputs.tubular_map)
        _check_grid(volume_id, inputs.tubular_map, tub.data.shape, tub.affine, shape, affine)
        return np.asarray(tub.data) > 0
    if inputs.image is None:
        raise ValueError(f"volume {volume_id}: rib refinement needs the standardized CT or an external tubular map")
    ct = read_volume(inputs.image)
    _check_grid(volume_id, inputs.image, ct.data.shape, ct.affine, shape, affine)
    spacing = float(np.mean(ct.zooms))
    return tubular_map(np.asarray(ct.data), spine, spacing, settings.vesselness, settings.spine_dilation_radius,
                       settings.opening_radius, settings.min_component_voxels)


def _flavor_paths(volume_id: str, flavor_dirs: Mapping[str, FlavorMaps], flavors: Sequence[str]) -> dict[str, Path]:
    paths = {}
    for flavor in flavors:
        if flavor not in flavor_dirs:
            raise KeyError(f"volume {volume_id}: the ranking selects flavor {flavor!r}, but no prediction folder "
                           f"was given for it (have {sorted(flavor_dirs)})")
        index = MapIndex.of(flavor_dirs[flavor])
        path = index.get(volume_id)
        if path is None:
            where = ", ".join(str(f / f"{volume_id}.nii.gz") for f in index.folders)
            raise FileNotFoundError(f"volume {volume_id}: flavor {flavor!r} prediction {where} is missing")
        paths[flavor] = path
    return paths


def _read_flavor_maps(volume_id: str, paths: Mapping[str, Path]):
    maps, affine, first = {}, None, None
    for flavor, path in paths.items():
        vol = read_volume(path)
        if first is None:
            first, affine, shape = path, vol.affine, vol.data.shape
        else:
            _check_grid(volume_id, path, vol.data.shape, vol.affine, shape, affine, str(first))
        maps[flavor] = vol.data
    return maps, affine


def _kept_rows(map_path: Path, provenance_path: Path, stamp: str) -> list[AssemblyRow] | None:
    """The provenance rows of a map that carries `stamp`, or None when it must be made again."""
    if stored_fingerprint(map_path) != stamp or not provenance_path.is_file():
        return None
    try:
        return read_provenance(provenance_path)
    except (OSError, ValueError):
        return None


def _gt_digests(gt_dir: str | Path | None, group: int) -> dict[str, str]:
    if gt_dir is None:
        return {}
    files = (Path(gt_dir) / f"group_{group}.nii.gz", Path(gt_dir) / "provenance.tsv")
    return {f.name: file_digest(f) for f in files if f.is_file()}


def _digest(path: str | Path) -> str:
    path = Path(path)
    return file_digest(path) if path.is_file() else f"missing:{path}"


def _check_grid(volume_id, path, shape, affine, ref_shape, ref_affine, ref="the flavors' predictions") -> None:
    if tuple(shape) != tuple(ref_shape) or not np.allclose(affine, ref_affine, atol=GRID_TOLERANCE_MM):
        raise ValueError(f"volume {volume_id}: {path} has shape {tuple(shape)} and affine\n{affine}\nbut {ref} have "
                         f"shape {tuple(ref_shape)} and affine\n{ref_affine}; expected the standardized grid")
