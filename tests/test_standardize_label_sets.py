"""More than one label file per case (issue 10 item 5): the sheet's `label_<set>` columns, standardize's
label_<set>.nii.gz (the main label's checks and resampling, on the same grid), and the gt stage and the evaluation
reading what standardize wrote.

Inputs are constructed: the truth is a label map on a 1.5 mm RAS grid (the standardized grid), written to disk in
other voxel orders whose voxel centres are the same, so the standardized files must equal the truth exactly.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import ct_array, spacing_affine, write_nifti

from cadsflow.evaluation.alignment import ALIGNMENT_YAML
from cadsflow.evaluation.evaluate import VolumeToScore, run_batch
from cadsflow.gt.volume import prepare_volume_gt
from cadsflow.labels import load_label_space
from cadsflow.sheet import COLUMNS, SheetError, Volume, read_sheet, write_sheet
from cadsflow.sources import RegistryError, discover_volumes, load_registry
from cadsflow.standardize import StandardizeSettings, standardize_batch, standardize_volume

SHAPE = (20, 18, 16)
SPACING = 1.5  # the standardized spacing (Online Methods 1.2): input at this spacing is not resampled
MAIN_VALUES = {10: "sternum"}
OAR_VALUES = {2: "spinal_canal", 8: "heart"}


def truth_maps() -> tuple[np.ndarray, np.ndarray]:
    """The main and oar label maps on the standardized (RAS, 1.5 mm) grid: distinct blocks, asymmetric."""
    main = np.zeros(SHAPE, np.uint8)
    main[2:5, 3:9, 1:4] = 10
    oar = np.zeros(SHAPE, np.uint8)
    oar[10:16, 2:5, 6:14] = 8
    oar[6:8, 12:17, 9:11] = 2
    return main, oar


def las(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxel centres stored with the first axis flipped (x runs right-to-left)."""
    affine = np.diag([-SPACING, SPACING, SPACING, 1.0])
    affine[0, 3] = (data.shape[0] - 1) * SPACING
    return data[::-1].copy(), affine


def swapped_flipped(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxel centres stored in another converter's order: axes x and y swapped, z flipped."""
    stored = np.transpose(data, (1, 0, 2))[:, :, ::-1].copy()
    affine = np.array([[0, SPACING, 0, 0], [SPACING, 0, 0, 0], [0, 0, -SPACING, (data.shape[2] - 1) * SPACING],
                       [0, 0, 0, 1.0]])  # fmt: skip
    return stored, affine


def write_case(root, oar_file=None) -> tuple[str, str, str]:
    """Image and main label in LAS order, the oar label in a third order; all on one set of voxel centres."""
    main, oar = truth_maps()
    image = write_nifti(root / "img" / "c1.nii.gz", *las(ct_array(SHAPE, seed=1)))
    label = write_nifti(root / "lab" / "c1.nii.gz", *las(main))
    oar_path = write_nifti(root / "oar" / "c1.nii.gz", *(oar_file if oar_file is not None else swapped_flipped(oar)))
    return image, label, oar_path


def load(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def write_registry(root) -> str:
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump({"sources": {"vgc": {
        "images": "img/{case}.nii.gz", "labels": "lab/{case}.nii.gz", "label_values": MAIN_VALUES,
        "extra_label_sets": {"oar": {"labels": "oar/{case}.nii.gz", "label_values": OAR_VALUES}}}}}))  # fmt: skip
    return str(path)


# -- standardize: label_<set>.nii.gz -----------------------------------------------------------------------------


def test_main_and_oar_labels_are_standardized_onto_the_same_grid_with_their_exact_values(tmp_path):
    image, label, oar = write_case(tmp_path)
    record = standardize_volume("vgc_c1", image, label, tmp_path / "std", {0, 10}, extra_labels={"oar": oar},
                                known_extra_values={"oar": {0, 2, 8}})
    main_truth, oar_truth = truth_maps()
    assert record["status"] == "ok" and record["label_sets"] == ["main", "oar"]
    assert sorted(p.name for p in (tmp_path / "std").iterdir()) == [
        "image.nii.gz", "label.nii.gz", "label_oar.nii.gz", "record.json"]
    affines = {name: nib.load(str(tmp_path / "std" / name)).affine for name in ("image.nii.gz", "label.nii.gz",
                                                                                 "label_oar.nii.gz")}
    assert all(np.array_equal(a, np.diag([SPACING, SPACING, SPACING, 1.0])) for a in affines.values())
    assert np.array_equal(load(tmp_path / "std" / "label.nii.gz"), main_truth)
    assert np.array_equal(load(tmp_path / "std" / "label_oar.nii.gz"), oar_truth)


def test_extra_label_is_resampled_with_the_main_labels_nearest_neighbour_grid(tmp_path):
    # 3 mm input -> 1.5 mm: the oar file is the main file with its values renamed (10 -> 8), so wherever the
    # resampling puts a main voxel it must put the oar voxel with the renamed value
    rng = np.random.default_rng(4)
    main = np.where(rng.random((9, 8, 7)) < 0.4, 10, 0).astype(np.uint8)
    affine = spacing_affine((3.0, 3.0, 3.0), origin=(5.0, -2.0, 7.0))
    image = write_nifti(tmp_path / "i.nii.gz", ct_array((9, 8, 7), seed=2), affine)
    label = write_nifti(tmp_path / "l.nii.gz", main, affine)
    oar = write_nifti(tmp_path / "o.nii.gz", np.where(main == 10, 8, 0).astype(np.uint8), affine)
    record = standardize_volume("v", image, label, tmp_path / "std", extra_labels={"oar": oar})
    std_main, std_oar = load(tmp_path / "std" / "label.nii.gz"), load(tmp_path / "std" / "label_oar.nii.gz")
    assert record["geometry"]["output_shape"] == [18, 16, 14] and std_oar.shape == std_main.shape == (18, 16, 14)
    assert np.array_equal(std_oar, np.where(std_main == 10, 8, 0))
    assert 0 < (std_main == 10).sum() < std_main.size


def test_extra_label_with_a_value_unknown_to_its_set_quarantines_the_volume_naming_the_file(tmp_path):
    _, oar_truth = truth_maps()
    oar_truth[0:2, 0:2, 0:2] = 7  # not in the oar set's mapping (7 is unknown there)
    image, label, oar = write_case(tmp_path, swapped_flipped(oar_truth))
    record = standardize_volume("v", image, label, tmp_path / "std", {0, 10}, extra_labels={"oar": oar},
                                known_extra_values={"oar": {0, 2, 8}})
    assert (record["status"], record["file"]) == ("quarantined", oar)
    assert record["reason"] == (
        "extra label set 'oar': label values [7] are not in the source's mapping (known: [0, 2, 8])")
    assert [p.name for p in (tmp_path / "std").iterdir()] == ["record.json"]


def test_extra_label_on_another_grid_quarantines_the_volume_with_the_distance(tmp_path):
    _, oar_truth = truth_maps()
    stored, affine = swapped_flipped(oar_truth)
    affine[0, 3] += 3.0  # every voxel centre 3 mm to the right of the image's
    image, label, oar = write_case(tmp_path, (stored, affine))
    record = standardize_volume("v", image, label, tmp_path / "std", extra_labels={"oar": oar})
    assert (record["status"], record["file"]) == ("quarantined", oar)
    assert record["reason"].startswith("extra label set 'oar': label affine differs from image affine: voxel "
                                       "centres differ by up to 3.000 mm")


def test_a_main_label_that_fails_is_still_reported_as_the_main_file(tmp_path):
    image, _, oar = write_case(tmp_path)
    main, _ = truth_maps()
    label = write_nifti(tmp_path / "lab" / "c1.nii.gz", *las(np.where(main == 10, 11, 0).astype(np.uint8)))
    record = standardize_volume("v", image, label, tmp_path / "std", {0, 10}, extra_labels={"oar": oar})
    assert (record["status"], record["file"]) == ("quarantined", label)
    assert record["reason"].startswith("label values [11] are not in the source's mapping")


def test_extra_label_file_that_does_not_exist_quarantines_the_volume_naming_the_file(tmp_path):
    image, label, _ = write_case(tmp_path)
    missing = str(tmp_path / "oar" / "nowhere.nii.gz")
    record = standardize_volume("v", image, label, tmp_path / "std", extra_labels={"oar": missing})
    assert (record["status"], record["file"]) == ("quarantined", missing)
    assert record["reason"].startswith("extra label set 'oar': unreadable:")


def test_extra_label_set_the_source_does_not_declare_quarantines_the_volume(tmp_path):
    image, label, oar = write_case(tmp_path)
    record = standardize_volume("v", image, label, tmp_path / "std", extra_labels={"brain": oar},
                                known_extra_values={"oar": {0, 2, 8}})
    assert (record["status"], record["file"]) == ("quarantined", oar)
    assert record["reason"] == (
        "extra label set 'brain' is not an extra label set of the volume's source (its sets: ['oar'])")


def test_volume_without_extra_labels_records_only_its_main_set(tmp_path):
    image, label, _ = write_case(tmp_path)
    record = standardize_volume("v", image, label, tmp_path / "std", {0, 10})
    assert record["label_sets"] == ["main"] and "extra_labels" not in record
    assert sorted(p.name for p in (tmp_path / "std").iterdir()) == ["image.nii.gz", "label.nii.gz", "record.json"]


# -- the sheet ---------------------------------------------------------------------------------------------------


def test_sheet_round_trip_keeps_the_extra_label_columns(tmp_path):
    volumes = [Volume("a", "vgc", str(tmp_path / "a.nii.gz"), str(tmp_path / "la.nii.gz"), "test", "WB",
                      extra_labels={"oar": str(tmp_path / "oa.nii.gz")}),
               Volume("b", "vgc", str(tmp_path / "b.nii.gz"), str(tmp_path / "lb.nii.gz"), "test", "WB")]
    write_sheet(volumes, tmp_path / "v.tsv")
    assert (tmp_path / "v.tsv").read_text().splitlines()[0].split("\t") == [*COLUMNS, "label_oar"]
    assert list(read_sheet(tmp_path / "v.tsv").values()) == volumes


def test_sheet_without_extra_label_columns_reads_and_writes_as_before(tmp_path):
    (tmp_path / "v.tsv").write_text("volume_id\tsource\timage\tlabel\tsplit\na\ts\ta.nii.gz\tl.nii.gz\ttest\n")
    volume = read_sheet(tmp_path / "v.tsv")["a"]
    assert volume == Volume("a", "s", str(tmp_path / "a.nii.gz"), str(tmp_path / "l.nii.gz"), "test")
    assert volume.extra_labels == {} and "extra_labels" not in repr(volume)  # Snakemake params compare by repr
    write_sheet([volume], tmp_path / "w.tsv")
    assert (tmp_path / "w.tsv").read_text().splitlines()[0].split("\t") == list(COLUMNS)


def test_sheet_extra_label_cells_resolve_like_label_and_an_empty_cell_means_none(tmp_path):
    (tmp_path / "v.tsv").write_text("volume_id\tsource\timage\tlabel\tsplit\tlabel_oar\n"
                                    "a\ts\ta.nii.gz\tl.nii.gz\ttest\toar/a.nii.gz\n"
                                    "b\ts\tb.nii.gz\tl.nii.gz\ttest\t\n")
    volumes = read_sheet(tmp_path / "v.tsv")
    assert volumes["a"].extra_labels == {"oar": str(tmp_path / "oar" / "a.nii.gz")}
    assert volumes["b"].extra_labels == {}
    assert hash(volumes["a"]) == hash(Volume("a", "s", str(tmp_path / "a.nii.gz"), str(tmp_path / "l.nii.gz"), "test"))


@pytest.mark.parametrize("column", ["label_2x", "label_o-ar", "label_main", "label_"])
def test_sheet_column_that_does_not_name_an_identifier_set_is_rejected_with_the_file(tmp_path, column):
    (tmp_path / "v.tsv").write_text(f"volume_id\tsource\timage\tlabel\tsplit\t{column}\na\ts\ta\tl\ttest\tx\n")
    with pytest.raises(SheetError, match=rf"v\.tsv: columns \['{column}'\] do not name a label set"):
        read_sheet(tmp_path / "v.tsv")


def test_registry_extra_label_set_name_that_is_not_an_identifier_is_rejected(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"sources": {"s": {
        "images": "i/{case}.nii.gz", "extra_label_sets": {"o-ar": {"labels": "o/{case}.nii.gz"}}}}}))  # fmt: skip
    with pytest.raises(RegistryError, match="extra label set 'o-ar': a set name must match"):
        load_registry(tmp_path / "r.yaml")


def test_discovered_volumes_carry_the_extra_label_files_that_exist(tmp_path):
    write_case(tmp_path)
    write_nifti(tmp_path / "img" / "c2.nii.gz", np.zeros((2, 2, 2), np.int16))
    write_nifti(tmp_path / "lab" / "c2.nii.gz", np.zeros((2, 2, 2), np.uint8))
    volumes = {v.volume_id: v for v in discover_volumes(load_registry(write_registry(tmp_path)))}
    assert volumes["vgc_c1"].extra_labels == {"oar": str(tmp_path / "oar" / "c1.nii.gz")}
    assert volumes["vgc_c2"].extra_labels == {}


# -- through the gt stage and the evaluation, from standardize's own output ---------------------------------------


@pytest.fixture(scope="module")
def standardized(tmp_path_factory):
    """Registry -> sheet -> read back -> standardize_batch with the registry's known values per set."""
    root = tmp_path_factory.mktemp("label_sets")
    write_case(root)
    sources = load_registry(write_registry(root))
    write_sheet(discover_volumes(sources), root / "volumes.tsv")
    volumes = list(read_sheet(root / "volumes.tsv", set(sources)).values())
    known = {v.volume_id: {"main": sorted(sources[v.source].known_values()),
                           **{k: sorted(s) for k, s in sources[v.source].extra_known_values().items()}}
             for v in volumes}  # as rules/standardize_lookups.smk known_label_values gives them
    records = standardize_batch(volumes, root / "std", known, StandardizeSettings())
    return root, sources, records


def test_standardized_batch_from_the_sheet_writes_both_label_files(standardized):
    root, _, records = standardized
    assert [(r["volume_id"], r["status"], r["label_sets"]) for r in records] == [("vgc_c1", "ok", ["main", "oar"])]
    on_disk = json.loads((root / "std" / "vgc_c1" / "record.json").read_text())
    assert on_disk["extra_labels"] == {"oar": str(root / "oar" / "c1.nii.gz")}


def test_gt_stage_combines_both_standardized_label_sets_into_one_group_map(standardized):
    root, sources, _ = standardized
    space = load_label_space()
    record = prepare_volume_gt("vgc_c1", sources["vgc"], root / "std" / "vgc_c1", root / "gt", space=space)
    ids = space.group_label_map(556)  # sternum (main set), heart and spinal canal (oar set) share group 556
    main, oar = truth_maps()
    expected = np.zeros(SHAPE, np.uint8)
    expected[main == 10] = ids["sternum"]
    expected[oar == 8] = ids["heart"]
    expected[oar == 2] = ids["spinal_canal"]
    assert record["label_sets"] == ["main", "oar"]
    assert np.array_equal(load(root / "gt" / "group_556.nii.gz"), expected)


def test_evaluation_scores_the_standardized_extra_label_set_as_its_own_dataset(standardized):
    root, _, _ = standardized
    space = load_label_space()
    main, oar = truth_maps()
    pred = np.zeros(SHAPE, np.uint8)
    pred[main == 10] = space.by_name("sternum").global_id
    pred[oar == 8] = space.by_name("heart").global_id  # spinal canal missed
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    item = VolumeToScore("vgc_c1", "vgc", str(root / "std" / "vgc_c1"), write_nifti(root / "p.nii.gz", pred, affine))
    rows = run_batch([item], root / "s.tsv", ALIGNMENT_YAML, root / "r.yaml")
    scored = {(r["source"], r["structure"]): (r["status"], r["dice"]) for r in rows}
    assert scored == {("vgc", "sternum"): ("scored", 1.0), ("vgc:oar", "heart"): ("scored", 1.0),
                      ("vgc:oar", "spinal_canal"): ("false_negative", 0.0)}  # fmt: skip
