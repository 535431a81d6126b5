"""One standardized volume -> results/gt/{volume_id}/: group maps, provenance, record (demo sources)."""

import json

import nibabel as nib
import numpy as np
import pytest

from cadsflow.gt.atlas import make_phantom_atlas, RegistrationSettings
from cadsflow.gt.mapping import ignore_label
from cadsflow.gt.phantoms import body_phantom, demo_registry, sparsify, write_standardized
from cadsflow.gt.provenance import read_provenance
from cadsflow.gt.volume import prepare_volume_gt
from cadsflow.labels import load_label_space
from cadsflow.sources import RegistryError, load_registry

SHAPE = (24, 20, 30)


@pytest.fixture(scope="module")
def space():
    return load_label_space()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_registry(demo_registry(tmp_path_factory.mktemp("reg") / "registry.yaml"))


def _value(source, name):
    return next(v for v, spec in source.label_values.items() if name in spec.targets or spec.note == name)


def _image():
    return np.full(SHAPE, -1000, dtype=np.int16)


def _load(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_totalseg_like_volume_writes_a_map_per_covered_group_with_group_ids(tmp_path, demo, space):
    ts = demo["demo_totalseg"]
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:6] = _value(ts, "liver")
    labels[8:10] = _value(ts, "vertebrae_T12")
    labels[12:14] = _value(ts, "rib_left_3")
    std = write_standardized(tmp_path / "std", "ts1", "demo_totalseg", _image(), {"label.nii.gz": labels})
    record = prepare_volume_gt("ts1", ts, std, tmp_path / "gt", space=space)
    assert record["status"] == "ok" and record["groups"] == [551, 552, 553, 554, 555]
    organs = _load(tmp_path / "gt" / "group_551.nii.gz")
    assert (organs[2:6] == space.group_label_map(551)["liver"]).all() and (organs[8:] == 0).all()
    assert (_load(tmp_path / "gt" / "group_555.nii.gz")[12:14] == space.group_label_map(555)["rib_left_3"]).all()


def test_provenance_lists_each_exact_structure_with_its_source_value_and_voxels(tmp_path, demo, space):
    ts = demo["demo_totalseg"]
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:6] = _value(ts, "liver")
    std = write_standardized(tmp_path / "std", "ts2", "demo_totalseg", _image(), {"label.nii.gz": labels})
    prepare_volume_gt("ts2", ts, std, tmp_path / "gt", space=space)
    rows = read_provenance(tmp_path / "gt" / "provenance.tsv")
    assert [(r.structure, r.group, r.origin, r.source_value, r.n_voxels) for r in rows] == [
        ("liver", 551, "source_gt", _value(ts, "liver"), 4 * 20 * 30)]


def test_quarantined_volume_gets_a_skipped_record_and_no_maps(tmp_path, demo):
    std = write_standardized(tmp_path / "std", "q1", "demo_totalseg", None, status="quarantined", reason="no air")
    record = prepare_volume_gt("q1", demo["demo_totalseg"], std, tmp_path / "gt")
    assert record["status"] == "skipped" and "no air" in record["reason"]
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == ["record.json"]


def test_unlabelled_volume_of_a_non_atlas_source_is_skipped_with_the_reason(tmp_path, demo):
    std = write_standardized(tmp_path / "std", "u1", "demo_unlabelled", _image())
    record = prepare_volume_gt("u1", demo["demo_unlabelled"], std, tmp_path / "gt")
    assert record["status"] == "skipped" and "no label file" in record["reason"]


def test_a_todo_mapping_is_an_error_not_a_guess(tmp_path, space):
    registry = tmp_path / "r.yaml"
    registry.write_text("sources:\n  pending:\n    images: i/{case}.nii.gz\n    labels: l/{case}.nii.gz\n"
                        "    mapping_status: todo\n    label_values: {1: liver}\n")
    std = write_standardized(tmp_path / "std", "p1", "pending", _image(), {"label.nii.gz": np.ones(SHAPE, np.uint8)})
    with pytest.raises(RegistryError, match="pending.*TODO"):
        prepare_volume_gt("p1", load_registry(registry)["pending"], std, tmp_path / "gt", space=space)
    assert not (tmp_path / "gt").exists()


def test_kits_like_union_and_lesion_give_provenance_but_no_training_map(tmp_path, demo, space):
    kits = demo["demo_kits"]
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[4:8] = _value(kits, "kidneys")
    labels[5, 5, 5] = _value(kits, "kidney_tumor")
    std = write_standardized(tmp_path / "std", "k1", "demo_kits", _image(), {"label.nii.gz": labels})
    record = prepare_volume_gt("k1", kits, std, tmp_path / "gt", space=space)
    origins = {(r.structure, r.origin) for r in read_provenance(tmp_path / "gt" / "provenance.tsv")}
    assert record["groups"] == [] and origins == {
        ("kidney_left", "mapped_union"), ("kidney_right", "mapped_union"), ("kidney_right", "lesion")}


def test_sparse_saros_like_volume_is_interpolated_before_mapping(tmp_path, demo, space):
    saros = demo["demo_saros"]
    truth = body_phantom((40, 36, 31))  # its values 1, 2, 3, 5, 6 are all mapped by the demo SAROS source
    std = write_standardized(tmp_path / "std", "s1", "demo_saros", np.zeros(truth.shape, np.int16),
                             {"label.nii.gz": sparsify(truth, 5, 255)})
    record = prepare_volume_gt("s1", saros, std, tmp_path / "gt", space=space)
    body = _load(tmp_path / "gt" / "group_559.nii.gz")
    assert record["sparse"]["interpolated_slices"] == 24 and not (body == ignore_label(559, space)).any()
    rows = read_provenance(tmp_path / "gt" / "provenance.tsv")
    assert {r.origin for r in rows} == {"interpolated"}


def test_sparse_volume_in_ignore_mode_keeps_key_slices_exact_and_ignores_the_rest(tmp_path, demo, space):
    saros = demo["demo_saros"]
    truth = body_phantom((40, 36, 31))
    sparse = sparsify(truth, 5, 255)
    std = write_standardized(tmp_path / "std", "s1", "demo_saros", np.zeros(truth.shape, np.int16),
                             {"label.nii.gz": sparse})
    record = prepare_volume_gt("s1", saros, std, tmp_path / "gt", space=space, sparse_labels="ignore")
    body = _load(tmp_path / "gt" / "group_559.nii.gz")
    keys = np.flatnonzero((sparse != 255).all(axis=(0, 1)))
    others = np.setdiff1d(np.arange(truth.shape[2]), keys)
    assert record["sparse"]["mode"] == "ignore" and record["sparse"]["key_slices"] == len(keys) == 7
    assert record["sparse"]["interpolated_slices"] == 0
    assert (body[:, :, others] == ignore_label(559, space)).all()  # nobody looked: no loss there
    interpolated = _load_interpolated(tmp_path, saros, truth, space)
    assert np.array_equal(body[:, :, keys], interpolated[:, :, keys])  # the key slices map as in the paper's mode
    origins = {r.origin for r in read_provenance(tmp_path / "gt" / "provenance.tsv")}
    assert "source_gt" in origins and "unannotated" in origins and "interpolated" not in origins
    with pytest.raises(ValueError, match="sparse_labels"):
        prepare_volume_gt("s1", saros, std, tmp_path / "gt2", space=space, sparse_labels="nearest")


def _load_interpolated(tmp_path, saros, truth, space):
    std = write_standardized(tmp_path / "std_i", "s1", "demo_saros", np.zeros(truth.shape, np.int16),
                             {"label.nii.gz": sparsify(truth, 5, 255)})
    prepare_volume_gt("s1", saros, std, tmp_path / "gt_i", space=space)
    return _load(tmp_path / "gt_i" / "group_559.nii.gz")


def test_extra_label_set_is_combined_into_the_same_group_map(tmp_path, space):
    registry = tmp_path / "r.yaml"
    registry.write_text(
        "sources:\n  visc:\n    images: i/{case}.nii.gz\n    labels: l/{case}.nii.gz\n    label_values: {10: sternum}\n"
        "    extra_label_sets:\n      oar:\n        label_values: {2: spinal_canal, 8: heart}\n")
    main = np.zeros(SHAPE, np.uint8)
    main[0:2] = 10
    extra = np.zeros(SHAPE, np.uint8)
    extra[5:7] = 8
    files = {"label.nii.gz": main, "label_oar.nii.gz": extra}
    std = write_standardized(tmp_path / "std", "v1", "visc", _image(), files)
    record = prepare_volume_gt("v1", load_registry(registry)["visc"], std, tmp_path / "gt", space=space)
    oar = _load(tmp_path / "gt" / "group_556.nii.gz")
    ids = space.group_label_map(556)
    assert record["label_sets"] == ["main", "oar"]
    assert (oar[0:2] == ids["sternum"]).all() and (oar[5:7] == ids["heart"]).all()


def test_atlas_source_volume_gets_registered_brain_labels(tmp_path, demo, space):
    atlas = make_phantom_atlas((40, 40, 40), 4.5, seed=0)
    head = make_phantom_atlas((40, 40, 40), 4.5, seed=2)  # the head CT of an atlas source, without labels
    std = write_standardized(tmp_path / "std", "h1", "demo_hanseg", head.image, spacing_mm=4.5)
    record = prepare_volume_gt("h1", demo["demo_hanseg"], std, tmp_path / "gt", atlas=atlas,
                               registration=RegistrationSettings(random_seed=3), space=space)
    brain = _load(tmp_path / "gt" / "group_557.nii.gz")
    assert record["groups"] == [557] and brain.shape == head.labels.shape
    # every atlas structure arrives (an empty or partial map fails), and where the head's own anatomy is: the head
    # phantom is the atlas phantom with other noise, so its labels are the truth the registration must find
    assert set(np.unique(brain)) == set(np.unique(atlas.labels))
    ids = sorted(set(np.unique(head.labels)) - {0})
    dice = [2 * ((brain == c) & (head.labels == c)).sum() / ((brain == c).sum() + (head.labels == c).sum()) for c in ids]
    assert np.mean(dice) > 0.95, dict(zip(ids, np.round(dice, 3)))
    assert {r.origin for r in read_provenance(tmp_path / "gt" / "provenance.tsv")} == {"registered"}
    assert json.loads((tmp_path / "gt" / "record.json").read_text())["registered"]["interpolator"] == "genericLabel"
