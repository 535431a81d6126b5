"""Baseline import: TotalSegmentator v2 labels mapped by name onto the unified structures (data, not code)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import SHARED, spacing_affine, write_nifti

from cadsflow.evaluation.baseline import (
    BaselineError,
    baseline_mapping_path,
    import_baseline,
    load_baseline_mapping,
    to_unified,
)
from cadsflow.labels import load_label_space

SPACE = load_label_space()
TS_LABELS = SHARED / "data" / "totalseg_example" / "labels_total_v2.json"


@pytest.fixture(scope="module")
def mapping():
    return load_baseline_mapping(baseline_mapping_path("totalsegmentator_v2"))


def test_every_totalsegmentator_class_named_like_a_cads_structure_is_mapped_to_it_by_one_task(mapping):
    cads = set(SPACE.names())
    same_name = [(t, v, n) for t, m in mapping.tasks.items() for v, n in m.baseline_names.items() if n in cads]
    assert len(same_name) == 101 + 7 + 1  # total, heartchambers_highres (aorta too), face
    for task, value, name in same_name:
        owner = mapping.task_of(name)
        assert mapping.tasks[task].value_to_structure.get(value) == (name if owner == task else None), (task, name)
    assert mapping.task_of("aorta") == "total"  # heartchambers_highres also predicts the aorta: total keeps it


def test_counterparts_with_other_names_are_mapped(mapping):
    by_name = {mapping.baseline_names[v]: s for v, s in mapping.value_to_structure.items()}
    assert (by_name["thyroid_gland"], by_name["common_carotid_artery_left"], by_name["vertebrae_S1"]) == (
        "OAR_Glnd_Thyroid", "OAR_A_Carotid_L", "sacrum")  # fmt: skip


def test_total_task_lists_all_117_totalsegmentator_v2_classes_and_maps_them_onto_104_structures(mapping):
    total = mapping.tasks["total"]
    assert (len(total.baseline_names), len(set(total.value_to_structure.values()))) == (117, 104)


# murong-xu/CADS dataset_utils/bodyparts_labelmaps.py: totalseg_exclude_to_compare (display names there), as
# unified names: the 49 structures TotalSegmentator v2 does not predict
AUTHORS_EXCLUDED = {
    "larynx", "right psoas major", "left psoas major", "right rectus abdominis", "left rectus abdominis",
    "spinal_canal", "bowel_bag", "sigmoid", "rectum", "seminal_vesicle", "left_mammary_gland", "right_mammary_gland",
    "OAR_Arytenoid", "OAR_Bone_Mandible", "OAR_BuccalMucosa", "OAR_Cavity_Oral", "OAR_Cochlea_L", "OAR_Cochlea_R",
    "OAR_Cricopharyngeus", "OAR_Esophagus_S", "OAR_Eye_AL", "OAR_Eye_AR", "OAR_Eye_PL", "OAR_Eye_PR",
    "OAR_Glnd_Lacrimal_L", "OAR_Glnd_Lacrimal_R", "OAR_Glottis", "OAR_Larynx_SG", "OAR_Lips", "OAR_OpticChiasm",
    "OAR_Pituitary", "white matter", "gray matter", "csf", "scalp", "eye balls", "compact bone", "spongy bone",
    "blood", "head muscles", "subcutaneous_tissue", "muscle", "abdominal_cavity", "thoracic_cavity", "bones",
    "glands", "pericardium", "breast_implant", "mediastinum",
}  # fmt: skip


def test_all_tasks_together_cover_the_authors_118_compared_structures(mapping):
    assert len(AUTHORS_EXCLUDED) == 49
    assert mapping.covered_structures == set(SPACE.names()) - AUTHORS_EXCLUDED
    assert len(mapping.covered_structures) == 118


def test_other_tasks_supply_heart_chambers_face_glands_optic_nerves_and_brainstem(mapping):
    tasks = {s: mapping.task_of(s) for s in ("heart_ventricle_left", "pulmonary_artery", "face", "OAR_Parotid_L",
                                             "OAR_Glnd_Submand_R", "OAR_OpticNrv_L", "OAR_Brainstem", "heart")}
    assert tasks == {"heart_ventricle_left": "heartchambers_highres", "pulmonary_artery": "heartchambers_highres",
                     "face": "face", "OAR_Parotid_L": "head_glands_cavities", "OAR_Glnd_Submand_R": "head_glands_cavities",
                     "OAR_OpticNrv_L": "head_glands_cavities", "OAR_Brainstem": "brain_structures", "heart": "total"}


def test_a_structure_mapped_by_two_tasks_is_refused_with_file_and_line(tmp_path):
    bad = tmp_path / "two.tsv"
    bad.write_text("task\tbaseline_value\tbaseline_name\tcads_name\tnote\n"
                   "total\t1\taorta\taorta\t\nheartchambers_highres\t6\taorta\taorta\t\n")
    with pytest.raises(BaselineError, match=r"two.tsv:3.*'aorta'.*'total' and 'heartchambers_highres'"):
        load_baseline_mapping(bad, SPACE)


@pytest.mark.skipif(not TS_LABELS.exists(), reason=f"{TS_LABELS} not present (../shared is absent on this machine)")
def test_mapping_names_match_totalsegmentator_label_file(mapping):
    shipped = {int(k): v for k, v in json.loads(TS_LABELS.read_text()).items()}
    assert mapping.baseline_names == shipped


def test_merged_classes_share_one_unified_id_and_unmapped_become_background(mapping):
    values = {n: v for v, n in mapping.baseline_names.items()}
    labels = np.array([[[values["sacrum"], values["vertebrae_S1"], values["skull"], values["liver"], 0]]])
    assert to_unified(labels, mapping, SPACE).tolist() == [[[gid("sacrum"), gid("sacrum"), 0, gid("liver"), 0]]]


def test_each_task_map_is_read_with_its_own_label_values(mapping):
    labels = np.array([[[1, 3, 6, 7, 0]]], dtype=np.uint8)  # heartchambers_highres: myocardium, LV, aorta, PA
    expected = [[[gid("heart_myocardium"), gid("heart_ventricle_left"), 0, gid("pulmonary_artery"), 0]]]
    assert to_unified(labels, mapping, SPACE, task="heartchambers_highres").tolist() == expected
    assert to_unified(labels, mapping, SPACE).tolist() == [[[gid("spleen"), gid("kidney_left"), gid("stomach"),
                                                              gid("pancreas"), 0]]]  # fmt: skip


def gid(name):
    return SPACE.by_name(name).global_id


def test_label_value_missing_from_the_mapping_is_refused_naming_the_table(mapping):
    with pytest.raises(BaselineError, match=r"totalsegmentator_v2.tsv"):
        to_unified(np.array([[[200]]], dtype=np.uint8), mapping, SPACE)


def test_imported_baseline_keeps_the_grid_and_holds_unified_ids(tmp_path, mapping):
    affine = spacing_affine((1.5, 1.5, 3.0), origin=(10, 20, 30))
    data = np.zeros((4, 4, 4), np.uint8)
    data[1, 1, 1] = 5  # TotalSegmentator liver
    src = write_nifti(tmp_path / "ts.nii.gz", data, affine)
    import_baseline(src, tmp_path / "out.nii.gz", mapping, SPACE)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert np.allclose(out.affine, affine) and np.asarray(out.dataobj)[1, 1, 1] == gid("liver")


def test_mapping_to_an_unknown_structure_is_refused_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("baseline_value\tbaseline_name\tcads_name\tnote\n1\tspleen\tsplen\t\n")
    with pytest.raises(BaselineError, match=r"bad.tsv:2.*'splen'"):
        load_baseline_mapping(bad, SPACE)
