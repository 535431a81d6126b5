"""Assembly of one volume (or a batch) of one group from files: flavors' predictions + ground truth -> label map.

Per volume and group (written atomically):
- {out_dir}/{volume_id}.nii.gz: the assembled label map (the group's label ids, uint8) on the standardized grid;
- {out_dir}/{volume_id}.provenance.tsv: structure, origin (ground_truth / flavor / rib_repair), voxels, ml.
A batch job (one per batch of volumes, all groups: __main__.py) also writes one provenance table of all its volumes
and groups, which is what the dataset card reads.

Inputs: the flavors' predictions `{flavor_dir}/{volume_id}.nii.gz` (label maps of the group on the standardized
grid); the ranking's priority rows of the group; the volume's ground truth folder of the gt stage
(results/gt/<batch>/<volume_id>/: group_<G>.nii.gz and provenance.tsv), where only structures with an exact
origin (cadsflow.gt.provenance.EXACT_ORIGINS) and voxels override; `ignore` and coarse unions override nothing.
The rib group (config ribs.group) is then refined (ribs.py) with the spine from the volume's assembled spine group
and a tubular map: an external one (ribs.tubular_map) or the vesselness of the standardized CT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.assembly.blocks import Block, structures_matching
from cadsflow.assembly.merge import PriorityRow, assemble, missing_structures
from cadsflow.assembly.provenance import AssemblyRow, provenance_rows, write_provenance
from cadsflow.assembly.ribs import RibSettings, refine_ribs, tubular_map
from cadsflow.gt.provenance import EXACT_ORIGINS, read_provenance as read_gt_provenance
from cadsflow.imageio import read_volume, save_nifti
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.validate import GRID_TOLERANCE_MM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RibInputs:
    """What the rib refinement of one volume reads: the assembled spine group's map and a tubular source."""

    spine_map: Path
    image: Path | None = None  # the standardized CT, for the vesselness map
    tubular_map: Path | None = None  # an external tubular map (wins over the image)


def assemble_volume(
    volume_id: str,
    group: int,
    flavor_dirs: Mapping[str, str | Path],
    priority: Sequence[PriorityRow],
    gt_dir: str | Path | None,
    out_dir: str | Path,
    blocks: Sequence[Block],
    flavor_order: Sequence[str],
    rib_settings: RibSettings = RibSettings(),
    rib_inputs: RibInputs | None = None,
    space: LabelSpace | None = None,
) -> list[AssemblyRow]:
    """Assemble, refine ribs where the group is the rib group, write map and provenance; return the rows."""
    space = space or load_label_space()
    label_ids = space.group_label_map(group)
    missing = missing_structures(priority, label_ids)
    if missing:
        raise ValueError(f"volume {volume_id} group {group}: the priority table has no row for {missing}; "
                         f"every structure of the group needs a selected flavor")
    used = sorted({r.first for r in priority})  # a block's flavor is always one of its structures' first flavors
    flavor_maps, affine = _read_flavor_maps(volume_id, flavor_dirs, used)
    gt_map, gt_names = read_volume_gt(volume_id, gt_dir, group, next(iter(flavor_maps.values())).shape, affine)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    labels, rows = assemble(flavor_maps, priority, gt_map, gt_names, blocks, label_ids=label_ids,
                            flavor_order=flavor_order, volume_id=volume_id, voxel_ml=voxel_ml)
    if group == rib_settings.group:
        labels, rows = _refine_volume_ribs(volume_id, labels, rows, affine, rib_settings, rib_inputs, space,
                                           voxel_ml)
    out = Path(out_dir)
    save_nifti(labels.astype(np.uint8), affine, out / f"{volume_id}.nii.gz")
    write_provenance(rows, out / f"{volume_id}.provenance.tsv")
    return rows


def assemble_batch(
    volume_ids: Sequence[str],
    group: int,
    flavor_dirs: Mapping[str, str | Path],
    priority: Sequence[PriorityRow],
    gt_dirs: Sequence[str | Path | None],
    out_dir: str | Path,
    blocks: Sequence[Block],
    flavor_order: Sequence[str],
    rib_settings: RibSettings = RibSettings(),
    rib_inputs: Sequence[RibInputs] | None = None,
    space: LabelSpace | None = None,
    batch_provenance: str | Path | None = None,
) -> list[AssemblyRow]:
    """assemble_volume for each volume (gt_dirs and rib_inputs aligned with volume_ids); the rows of all, also
    written as one table when batch_provenance is given."""
    if len(gt_dirs) != len(volume_ids) or (rib_inputs is not None and len(rib_inputs) != len(volume_ids)):
        raise ValueError(f"group {group}: {len(volume_ids)} volumes but {len(gt_dirs)} gt folders and "
                         f"{len(rib_inputs or [])} rib inputs; they must be aligned")
    rows: list[AssemblyRow] = []
    for k, volume_id in enumerate(volume_ids):
        ribs = rib_inputs[k] if rib_inputs is not None else None
        rows += assemble_volume(volume_id, group, flavor_dirs, priority, gt_dirs[k], out_dir, blocks, flavor_order,
                                rib_settings, ribs, space)
        log.info("%s group %d: assembled", volume_id, group)
    if batch_provenance is not None:
        write_provenance(rows, batch_provenance)
    return rows


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


def _refine_volume_ribs(volume_id, labels, rows, affine, settings: RibSettings, inputs: RibInputs | None,
                        space: LabelSpace, voxel_ml: float):
    if inputs is None:
        raise ValueError(f"volume {volume_id}: group {settings.group} is the rib group; its refinement needs the "
                         f"assembled spine map (group {settings.spine_group}) and a CT or tubular map")
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
    return tubular_map(np.asarray(ct.data), spine, spacing, settings.vesselness, settings.spine_dilation_radius)


def _read_flavor_maps(volume_id: str, flavor_dirs: Mapping[str, str | Path], flavors: Sequence[str]):
    maps, affine, first = {}, None, None
    for flavor in flavors:
        if flavor not in flavor_dirs:
            raise KeyError(f"volume {volume_id}: the ranking selects flavor {flavor!r}, but no prediction folder "
                           f"was given for it (have {sorted(flavor_dirs)})")
        path = Path(flavor_dirs[flavor]) / f"{volume_id}.nii.gz"
        if not path.is_file():
            raise FileNotFoundError(f"volume {volume_id}: flavor {flavor!r} prediction {path} is missing")
        vol = read_volume(path)
        if first is None:
            first, affine = path, vol.affine
        else:
            _check_grid(volume_id, path, vol.data.shape, vol.affine, maps[flavors[0]].shape, affine, str(first))
        maps[flavor] = vol.data
    return maps, affine


def _check_grid(volume_id, path, shape, affine, ref_shape, ref_affine, ref="the flavors' predictions") -> None:
    if tuple(shape) != tuple(ref_shape) or not np.allclose(affine, ref_affine, atol=GRID_TOLERANCE_MM):
        raise ValueError(f"volume {volume_id}: {path} has shape {tuple(shape)} and affine\n{affine}\nbut {ref} have "
                         f"shape {tuple(ref_shape)} and affine\n{ref_affine}; expected the standardized grid")
