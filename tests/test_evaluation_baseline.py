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


def test_every_totalsegmentator_class_named_like_a_cads_structure_is_mapped_to_it(mapping):
    cads = set(SPACE.names())
    same_name = {v: n for v, n in mapping.baseline_names.items() if n in cads}
    assert all(mapping.value_to_structure.get(v) == n for v, n in same_name.items())


def test_counterparts_with_other_names_are_mapped(mapping):
    by_name = {mapping.baseline_names[v]: s for v, s in mapping.value_to_structure.items()}
    assert (by_name["thyroid_gland"], by_name["common_carotid_artery_left"], by_name["vertebrae_S1"]) == (
        "OAR_Glnd_Thyroid", "OAR_A_Carotid_L", "sacrum")  # fmt: skip


def test_mapping_lists_all_117_totalsegmentator_v2_classes_and_maps_them_onto_104_structures(mapping):
    assert (len(mapping.baseline_names), len(mapping.covered_structures)) == (117, 104)


@pytest.mark.skipif(not TS_LABELS.exists(), reason=f"{TS_LABELS} not present (../shared is absent on this machine)")
def test_mapping_names_match_totalsegmentator_label_file(mapping):
    shipped = {int(k): v for k, v in json.loads(TS_LABELS.read_text()).items()}
    assert mapping.baseline_names == shipped


def test_merged_classes_share_one_unified_id_and_unmapped_become_background(mapping):
    values = {n: v for v, n in mapping.baseline_names.items()}
    labels = np.array([[[values["sacrum"], values["vertebrae_S1"], values["skull"], values["liver"], 0]]])
    assert to_unified(labels, mapping, SPACE).tolist() == [[[gid("sacrum"), gid("sacrum"), 0, gid("liver"), 0]]]


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
