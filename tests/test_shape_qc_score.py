"""Shape QC scoring: HD90 on shapes with known distances, the status of every structure row, and the rows of
corrupt or empty pseudo-labels (cadsflow.shape_qc.score)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from cadsflow.shape_qc.model import PriorMeta, ShapePrior, build_decoder
from cadsflow.shape_qc.presets import load_preset
from cadsflow.evaluation.surfaces import distance_method
from cadsflow.shape_qc.score import score_file, score_files, structure_hd, structure_rows
from cadsflow.shape_qc.score_table import (
    ABSENT,
    FAILED,
    MISSING_IN_PSEUDOLABEL,
    MISSING_IN_RECONSTRUCTION,
    OK,
    SCORE_COLUMNS,
    WHOLE_VOLUME,
    read_scores,
)

PRESET = load_preset("demo")


def _cube(shape, lo, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, a + size) for a in lo)] = True
    return mask


def _prior(structures=("a", "b", "c", "d"), known=(True, True, True, False)) -> ShapePrior:
    """An untrained prior: scoring rows need only its structure list (and a decoder to exist)."""
    meta = PriorMeta(group=551, structures=list(structures), known=list(known), latent_dim=4, hidden_width=8,
                     num_layers=3, coord_layers=[0], coord_scale_mm=30.0, extent_lo=[-1.0] * 3,
                     extent_hi=[1.0] * 3, training_volumes=["t"], seed=0)
    import torch

    return ShapePrior(decoder=build_decoder(meta), latents=torch.zeros(1, 4), meta=meta)


def test_hd90_of_a_cube_and_its_copy_shifted_by_three_voxels_is_three_voxel_lengths():
    # Every surface corner is at most 3 voxels from the other surface, and the two faces across the shift (1/6 of
    # the surface each way) are exactly 3 voxels away, so the 90th percentile is exactly 3 voxels.
    a = _cube((24, 24, 24), (5, 5, 5), 10)
    b = _cube((24, 24, 24), (8, 5, 5), 10)
    assert structure_hd(a, b, (1.5, 1.5, 1.5), 90.0) == pytest.approx(4.5)


def test_hd90_uses_the_spacing_of_the_shifted_axis():
    a = _cube((24, 24, 24), (5, 5, 5), 10)
    b = _cube((24, 24, 24), (8, 5, 5), 10)
    assert structure_hd(a, b, (2.0, 1.0, 0.5), 90.0) == pytest.approx(6.0)


def test_hd90_ignores_one_far_voxel_that_hd100_measures():
    # A 10-voxel cube (corners 5..15 along x) plus one voxel with corners at x = 20..21 opposite the middle of its
    # face: the voxel's far corners lie 6 voxels from the cube, but its surface is ~1% of the total, below the 10%
    # the 90th percentile lets through.
    a = _cube((30, 30, 30), (5, 5, 5), 10)
    b = a.copy()
    b[20, 10, 10] = True
    assert structure_hd(a, b, (1.0, 1.0, 1.0), 90.0) == 0.0
    assert structure_hd(a, b, (1.0, 1.0, 1.0), 100.0) == pytest.approx(6.0)


def _checkerboard(shape) -> np.ndarray:
    """Every voxel's 6 neighbours differ from it: all voxels of the grid lie on the mask's boundary."""
    return np.indices(shape).sum(axis=0) % 2 == 1


def test_distance_method_takes_the_transform_when_the_surfaces_outweigh_the_crop():
    # A checkerboard over the whole 30^3 crop: 27,000 boundary voxels, 20 x 27,000 > 27,000 crop voxels. At 1.5 mm
    # the Maurer transform gives scipy's distances bit for bit; at 0.8 mm it does not: scipy's transform instead.
    shape = (30, 30, 30)
    a, b = _checkerboard(shape), _cube(shape, (5, 5, 5), 10)
    assert distance_method(a, b, (1.5, 1.5, 1.5)) == "maurer"
    assert distance_method(a, b, (1.5, 1.5, 2.0)) == "maurer"
    assert distance_method(a, b, (0.8, 0.8, 0.8)) == "edt"


def test_distance_method_keeps_the_local_search_for_compact_structures():
    # Two 10^3 cubes: 2 x (1000 - 8^3) = 976 boundary voxels, 20 x 976 = 19,520 < 40^3 = 64,000 crop voxels.
    shape = (40, 40, 40)
    a, b = _cube(shape, (5, 5, 5), 10), _cube(shape, (8, 5, 5), 10)
    assert distance_method(a, b, (1.5, 1.5, 1.5)) == "local"
    assert distance_method(a, b, (0.8, 0.8, 0.8)) == "local"


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (2.0, 1.0, 0.5), (1.5, 1.5, 2.0), (2.5, 0.75, 0.75)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd90_of_a_shifted_cube_is_the_shift_by_every_method(spacing, axis):
    # A 10-voxel cube and its copy shifted by 3 voxels along `axis`: HD90 is 3 voxel lengths of that axis (see the
    # first test), the same float by every method, including the Maurer transform at these spacings.
    shape = (24, 24, 24)
    shifted = [5, 5, 5]
    shifted[axis] += 3
    a, b = _cube(shape, (5, 5, 5), 10), _cube(shape, tuple(shifted), 10)
    expected = math.sqrt((3 * spacing[axis]) ** 2)
    for method in (None, "local", "kdtree", "edt", "maurer"):
        assert structure_hd(a, b, spacing, 90.0, method=method) == expected, method


@pytest.mark.parametrize("spacing", [(1.5, 0.8, 0.8), (2.5, 0.7, 0.7)])
def test_hd90_of_a_shifted_cube_at_other_spacings_keeps_the_exact_methods(spacing):
    # Where the Maurer transform is not exact (float32 voxel positions), the chosen method is an exact one: the
    # score equals scipy's transform bit for bit whatever the choice; the Maurer value itself is within float32.
    shape = (24, 24, 24)
    a, b = _checkerboard(shape), _cube(shape, (8, 5, 5), 10)
    a[:, :, 12:] = False
    assert distance_method(a, b, spacing) == "edt"
    exact = structure_hd(a, b, spacing, 90.0, method="edt")
    assert structure_hd(a, b, spacing, 90.0) == exact
    assert structure_hd(a, b, spacing, 90.0, method="local") == exact
    assert structure_hd(a, b, spacing, 90.0, method="maurer") == pytest.approx(exact, rel=1e-5, abs=0)
    a, b = _cube(shape, (5, 5, 5), 10), _cube(shape, (5, 8, 5), 10)
    assert structure_hd(a, b, spacing, 90.0) == math.sqrt((3 * spacing[1]) ** 2)


@pytest.mark.parametrize("percentile", [50.0, 90.0, 100.0])
def test_hd_with_the_chosen_method_equals_the_local_search_and_the_transform_exactly(percentile):
    # Far-apart surfaces (a checkerboard half vs a cube) as a poor pseudo-label gives them: every method of
    # cadsflow.evaluation.surfaces gives the same value, so choosing the method does not change a score.
    shape = (30, 30, 30)
    a = _checkerboard(shape)
    a[:, :, 15:] = False
    b = _cube(shape, (10, 10, 20), 8)
    spacing = (1.5, 1.5, 2.0)
    chosen = structure_hd(a, b, spacing, percentile)
    assert chosen == structure_hd(a, b, spacing, percentile, method="local")
    assert chosen == structure_hd(a, b, spacing, percentile, method="edt")
    assert chosen == structure_hd(a, b, spacing, percentile, method="maurer")


def test_structure_rows_give_each_structure_its_status_and_missing_sides_the_image_diagonal():
    prior = _prior()
    shape, spacing = (20, 20, 20), (1.5, 1.5, 2.0)
    pseudo = np.zeros(shape, dtype=np.uint8)
    recon = np.zeros(shape, dtype=np.uint8)
    pseudo[_cube(shape, (2, 2, 2), 4)] = 1  # a: in both, identical
    recon[_cube(shape, (2, 2, 2), 4)] = 1
    recon[_cube(shape, (10, 10, 10), 4)] = 2  # b: only in the reconstruction
    pseudo[_cube(shape, (2, 12, 2), 4)] = 4  # d: present, but no training map held it
    rows = {r["structure"]: r for r in structure_rows("v1", pseudo, recon, spacing, prior, PRESET)}
    diagonal = math.sqrt((20 * 1.5) ** 2 + (20 * 1.5) ** 2 + (20 * 2.0) ** 2)
    assert (rows["a"]["status"], rows["a"]["hd90_mm"]) == (OK, 0.0)
    assert rows["b"]["status"] == MISSING_IN_PSEUDOLABEL
    assert rows["b"]["hd90_mm"] == pytest.approx(diagonal)
    assert rows["c"]["status"] == ABSENT and math.isnan(rows["c"]["hd90_mm"])
    assert rows["d"]["status"] == FAILED and "no training map" in rows["d"]["reason"]


def test_a_structure_only_in_the_pseudolabel_is_missing_in_reconstruction_with_a_finite_score():
    prior = _prior()
    shape = (10, 10, 10)
    pseudo = np.zeros(shape, dtype=np.uint8)
    pseudo[_cube(shape, (1, 1, 1), 3)] = 3
    rows = {r["structure"]: r for r in structure_rows("v", pseudo, np.zeros_like(pseudo), (1.0,) * 3, prior, PRESET)}
    assert rows["c"]["status"] == MISSING_IN_RECONSTRUCTION
    assert rows["c"]["hd90_mm"] == pytest.approx(math.sqrt(300.0))


def test_fewer_voxels_than_the_minimum_count_as_missing():
    prior = _prior()
    pseudo = np.zeros((10, 10, 10), dtype=np.uint8)
    recon = pseudo.copy()
    pseudo[1, 1, 1:1 + PRESET.min_structure_voxels - 1] = 1  # one voxel short of the minimum
    recon[_cube(recon.shape, (1, 1, 1), 3)] = 1
    rows = {r["structure"]: r for r in structure_rows("v", pseudo, recon, (1.0,) * 3, prior, PRESET)}
    assert rows["a"]["status"] == MISSING_IN_PSEUDOLABEL


def _write(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine), path)
    return path


def test_an_unreadable_pseudolabel_gets_one_failed_row_naming_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    rows = score_file(_prior(), path, "broken", PRESET)
    assert [(r["volume_id"], r["structure"], r["status"]) for r in rows] == [("broken", WHOLE_VOLUME, FAILED)]
    assert str(path) in rows[0]["reason"]


def test_a_pseudolabel_with_values_outside_the_group_gets_a_failed_row_naming_them(tmp_path):
    data = np.zeros((8, 8, 8), dtype=np.uint8)
    data[2, 2, 2] = 99
    rows = score_file(_prior(), _write(tmp_path / "v.nii.gz", data), "v", PRESET)
    assert [(r["structure"], r["status"]) for r in rows] == [(WHOLE_VOLUME, FAILED)]
    assert "[99]" in rows[0]["reason"] and "1..4" in rows[0]["reason"]


def test_a_four_dimensional_pseudolabel_gets_a_failed_row(tmp_path):
    rows = score_file(_prior(), _write(tmp_path / "v.nii.gz", np.zeros((4, 4, 4, 2), np.uint8)), "v", PRESET)
    assert [(r["structure"], r["status"]) for r in rows] == [(WHOLE_VOLUME, FAILED)]
    assert "3-D" in rows[0]["reason"]


def test_an_empty_pseudolabel_gets_one_absent_row_saying_it_is_empty(tmp_path):
    rows = score_file(_prior(), _write(tmp_path / "v.nii.gz", np.zeros((8, 8, 8), np.uint8)), "v", PRESET)
    assert [(r["structure"], r["status"]) for r in rows] == [(WHOLE_VOLUME, ABSENT)]
    assert "empty pseudo-label" in rows[0]["reason"]


def test_score_table_round_trips_through_its_tsv(tmp_path):
    broken = tmp_path / "bad.nii.gz"
    broken.write_bytes(b"x")
    empty = _write(tmp_path / "empty.nii.gz", np.zeros((8, 8, 8), np.uint8))
    table = score_files(_prior(), [broken, empty], PRESET, out=tmp_path / "scores.tsv")
    back = read_scores([tmp_path / "scores.tsv"])
    assert list(back.columns) == list(SCORE_COLUMNS)
    assert list(back["volume_id"]) == ["bad", "empty"] == list(table["volume_id"])
    assert list(back["status"]) == [FAILED, ABSENT]
    assert back["hd90_mm"].isna().all()
