"""The evaluation as the authors ran it (issue 10): SAROS slices, extra label sets, multi-task baselines, the
alignment file against the registry, VerSe and HaN-Seg exclusions."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import spacing_affine, write_nifti

from cadsflow.evaluation.alignment import ALIGNMENT_YAML, load_alignment, resolve_alignment
from cadsflow.evaluation.baseline import baseline_mapping_path
from cadsflow.evaluation.evaluate import EXCLUDED_CASE, VolumeToScore, evaluate_volume, run_batch
from cadsflow.labels import load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.sources import load_registry

SPACE = load_label_space()
REGISTRY = CONFIG_DIR / "sources" / "cads_collection.yaml"


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY)


def gid(name):
    return SPACE.by_name(name).global_id


def by_structure(rows, system="model"):
    return {r["structure"]: r for r in rows if r["system"] == system}


# -- item 4: SAROS ---------------------------------------------------------------------------------------------


def saros_case(tmp_path):
    """A box of muscle (SAROS 2) over 20 axial slices; slices 0-9 annotated, 10-14 all 255, 15-19 half 255."""
    shape = (10, 10, 20)
    ref = np.zeros(shape, np.uint8)
    ref[2:8, 2:8, :] = 2
    ref[:, :, 10:15] = 255
    ref[5:, :, 15:20] = 255  # partly annotated slices: kept; their 255 voxels count as background
    pred = np.zeros(shape, np.uint8)
    pred[2:8, 2:8, :] = gid("muscle")
    affine = spacing_affine((1.5, 1.5, 1.5))
    return write_nifti(tmp_path / "ref.nii.gz", ref, affine), write_nifti(tmp_path / "pred.nii.gz", pred, affine)


def test_saros_drops_only_slices_that_are_entirely_unannotated(tmp_path):
    ref, pred = saros_case(tmp_path)
    row = by_structure(evaluate_volume("s", "saros", ref, {"model": pred}, resolve_alignment("saros"), {}))["muscle"]
    # kept: slices 0-9 (36 + 36 voxels each) and 15-19 (reference 3x6 = 18 voxels, prediction 36 each)
    ref_voxels, pred_voxels = 10 * 36 + 5 * 18, 15 * 36
    assert row["dice"] == pytest.approx(2 * ref_voxels / (ref_voxels + pred_voxels), abs=1e-12)


def test_saros_keeps_the_original_spacing_on_the_kept_slices(tmp_path):
    shape = (10, 10, 20)
    ref = np.full(shape, 255, np.uint8)
    ref[:, :, ::5] = 0
    ref[2:8, 2:8, ::5] = 2  # every 5th slice annotated: 4 slices of 36 voxels
    pred = np.where(ref == 2, gid("muscle"), 0).astype(np.uint8)
    affine = spacing_affine((1.5, 1.5, 1.5))
    ref_path, pred_path = write_nifti(tmp_path / "r.nii.gz", ref, affine), write_nifti(tmp_path / "p.nii.gz", pred, affine)
    row = by_structure(evaluate_volume("s", "saros", ref_path, {"model": pred_path}, resolve_alignment("saros"), {}))
    assert row["muscle"]["ref_volume_ml"] == pytest.approx(4 * 36 * 1.5**3 / 1000, abs=1e-12)  # not 5x the slice gap


def test_saros_strips_slices_only_for_the_groups_553_and_559(tmp_path):
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump({"sources": {"sparse": {
        "unannotated_value": 255, "strip_slices_for_groups": [559],
        "classes": {"muscle": {"reference": [2], "prediction": ["muscle"]},
                    "liver": {"reference": [3], "prediction": ["liver"]}}}}}))  # fmt: skip
    shape = (10, 10, 10)
    ref = np.zeros(shape, np.uint8)
    ref[2:8, 2:8, :] = 2
    ref[:, :, 5:] = 255
    ref[0:2, 0:2, 0:5] = 3  # liver on the annotated slices
    pred = np.zeros(shape, np.uint8)
    pred[2:8, 2:8, :] = gid("muscle")  # also on the unannotated slices
    pred[0:2, 0:2, :] = gid("liver")
    affine = spacing_affine((1.0, 1.0, 1.0))
    rows = by_structure(evaluate_volume("s", "sparse", write_nifti(tmp_path / "r.nii.gz", ref, affine),
                                        {"model": write_nifti(tmp_path / "p.nii.gz", pred, affine)},
                                        resolve_alignment("sparse", load_alignment(path)), {}))  # fmt: skip
    assert rows["muscle"]["dice"] == 1.0  # group 559: the unannotated half is not looked at
    assert rows["liver"]["dice"] == pytest.approx(2 * 20 / (20 + 40))  # group 551: scored on every slice


# -- item 7: exclusions ----------------------------------------------------------------------------------------


def test_verse_case_on_the_authors_transitional_list_is_excluded_without_an_l6_label(tmp_path):
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:4, 2:4] = 20  # L1 only
    affine = spacing_affine((1.0, 1.0, 1.0))
    path = write_nifti(tmp_path / "r.nii.gz", ref, affine)
    pred = {"model": write_nifti(tmp_path / "p.nii.gz", np.where(ref == 20, gid("vertebrae_L1"), 0).astype(np.uint8), affine)}
    listed = evaluate_volume("verse_sub-verse131_ct", "verse", path, pred, resolve_alignment("verse"), {})
    other = evaluate_volume("verse_sub-verse132_ct", "verse", path, pred, resolve_alignment("verse"), {})
    assert {r["status"] for r in listed} == {EXCLUDED_CASE}
    assert by_structure(other)["vertebrae_L1"]["status"] == "scored"


def test_han_seg_spinal_cord_is_not_scored_but_its_other_29_classes_are(registry):
    alignment = resolve_alignment("han_seg", load_alignment(), registry)
    names = {c.name for c in alignment.classes}
    assert "spinal_cord" not in names and len(names) == 29


def test_every_alignment_entry_names_a_registry_source_and_agrees_with_its_label_values(registry):
    """Reference values of a class must be the registry values whose structures the class predicts (dead or
    contradicting entries, such as RadLex ids for VISCERAL or a bones class for CT-ORG's unmapped bone, fail)."""
    config = load_alignment()
    for key in config.sources:
        if key == "unified":
            continue
        source, _, label_set = key.partition(":")
        assert source in registry, key
        alignment = resolve_alignment(key, config, registry)
        if str(config.sources[key].get("classes", "")).startswith("group:"):
            continue  # group label ids (the factory's own atlas labels)
        values = registry[source].label_values if not label_set else None
        assert values is not None, f"{key}: an extra label set entry must use group ids or the registry"
        for c in alignment.classes:
            for v in c.reference_values:
                assert v in values and values[v].kind in ("structure", "union", "lesion_of"), (key, c.name, v)
                assert set(values[v].targets) <= set(c.prediction_structures), (key, c.name, v)


def test_ct_org_is_scored_on_its_four_mapped_classes(registry):
    alignment = resolve_alignment("ct_org", load_alignment(), registry)
    assert [c.name for c in alignment.classes] == ["liver", "urinary_bladder", "lungs", "kidneys"]


# -- item 5: more than one label file per case -----------------------------------------------------------------


def test_standardized_volume_with_an_extra_label_file_is_scored_as_a_second_dataset(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"sources": {"vgc": {
        "images": "i/{case}.nii.gz", "labels": "l/{case}.nii.gz", "label_values": {1: "liver"},
        "extra_label_sets": {"oar": {"labels": "o/{case}.nii.gz", "label_values": {1: "heart", 2: "sternum"}}}}}}))  # fmt: skip
    shape = (12, 12, 12)
    main = np.zeros(shape, np.uint8)
    main[1:5, 1:5, 1:5] = 1
    oar = np.zeros(shape, np.uint8)
    oar[6:10, 6:10, 6:10] = 1
    oar[0:2, 8:12, 8:12] = 2
    pred = np.zeros(shape, np.uint8)
    pred[1:5, 1:5, 1:5] = gid("liver")
    pred[6:10, 6:10, 6:10] = gid("heart")  # sternum missed
    affine = spacing_affine((1.5, 1.5, 1.5))
    folder = tmp_path / "std" / "vgc_1"
    folder.mkdir(parents=True)
    write_nifti(folder / "label.nii.gz", main, affine)
    write_nifti(folder / "label_oar.nii.gz", oar, affine)
    item = VolumeToScore("vgc_1", "vgc", str(folder), write_nifti(tmp_path / "p.nii.gz", pred, affine))
    rows = run_batch([item], tmp_path / "s.tsv", ALIGNMENT_YAML, tmp_path / "r.yaml")
    scored = {(r["source"], r["structure"]): (r["status"], r["dice"]) for r in rows}
    assert scored == {("vgc", "liver"): ("scored", 1.0), ("vgc:oar", "heart"): ("scored", 1.0),
                      ("vgc:oar", "sternum"): ("false_negative", 0.0)}  # fmt: skip


def test_factory_atlas_labels_are_scored_in_group_557_ids_as_han_seg_brain_atlas(tmp_path, registry):
    shape = (12, 12, 12)
    main = np.zeros(shape, np.uint8)
    main[0:3, 0:3, 0:3] = 5  # OAR_Brainstem in HaN-Seg's own values
    atlas = np.zeros(shape, np.uint8)
    white = SPACE.by_name("white matter")
    atlas[4:10, 4:10, 4:10] = white.label_id
    pred = np.zeros(shape, np.uint8)
    pred[4:10, 4:10, 4:10] = white.global_id
    pred[0:3, 0:3, 0:3] = gid("OAR_Brainstem")
    affine = spacing_affine((1.5, 1.5, 1.5))
    item = VolumeToScore("han_seg_case_04", "han_seg", write_nifti(tmp_path / "l.nii.gz", main, affine),
                         write_nifti(tmp_path / "p.nii.gz", pred, affine),
                         extra_references={"brain_atlas": write_nifti(tmp_path / "g557.nii.gz", atlas, affine)})
    rows = run_batch([item], tmp_path / "s.tsv", ALIGNMENT_YAML, REGISTRY)
    atlas_rows = {r["structure"]: r for r in rows if r["source"] == "han_seg:brain_atlas"}
    assert len(atlas_rows) == 9 and atlas_rows["white matter"]["dice"] == 1.0
    assert by_structure([r for r in rows if r["source"] == "han_seg"])["OAR_Brainstem"]["dice"] == 1.0


# -- item 6: a baseline made of several task outputs -----------------------------------------------------------


def test_baseline_task_files_score_each_structure_on_its_own_task_map(tmp_path):
    shape = (20, 20, 20)
    ref = np.zeros(shape, np.uint8)
    ref[4:16, 4:16, 4:16] = gid("heart_myocardium")
    ref[4:16, 4:10, 4:16] = gid("heart_ventricle_left")
    total = np.zeros(shape, np.uint8)
    total[4:16, 4:16, 4:16] = 51  # TotalSegmentator total: heart covers the chambers
    chambers = np.zeros(shape, np.uint8)
    chambers[4:16, 4:16, 4:16] = 1  # myocardium
    chambers[4:16, 4:10, 4:16] = 3  # left ventricle
    affine = spacing_affine((1.5, 1.5, 1.5))
    folder = tmp_path / "ts" / "v1"
    folder.mkdir(parents=True)
    write_nifti(folder / "total.nii.gz", total, affine)
    write_nifti(folder / "heartchambers_highres.nii.gz", chambers, affine)
    ref_path = write_nifti(tmp_path / "ref.nii.gz", ref, affine)
    item = VolumeToScore("v1", "unified", ref_path, ref_path, str(folder / "{task}.nii.gz"))
    rows = run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML, baseline_mapping_path=baseline_mapping_path(
        "totalsegmentator_v2"))  # fmt: skip
    baseline = by_structure(rows, "baseline")
    assert (baseline["heart_myocardium"]["dice"], baseline["heart_ventricle_left"]["dice"]) == (1.0, 1.0)
    # two tasks present: total's 104 structures and the six of heartchambers_highres; face, glands, brainstem absent
    assert len(baseline) == 110 and "face" not in baseline and baseline["heart"]["status"] == "false_positive"
