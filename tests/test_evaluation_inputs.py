"""Unusable evaluation inputs are refused with the file and the problem (issue 16: evaluation input error paths)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import spacing_affine, write_nifti

from cadsflow.evaluation.alignment import ALIGNMENT_YAML, resolve_alignment
from cadsflow.evaluation.baseline import baseline_mapping_path
from cadsflow.evaluation.evaluate import EvaluationInputError, VolumeToScore, evaluate_volume, run_batch

AFFINE = spacing_affine((1.5, 1.5, 1.5))


@pytest.fixture
def reference(tmp_path):
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1  # spleen
    return write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)


def score(reference, prediction):
    return evaluate_volume("v", "unified", reference, {"model": prediction}, resolve_alignment("unified"), {})


def test_missing_prediction_is_refused_naming_the_file(tmp_path, reference):
    with pytest.raises(EvaluationInputError, match=r"nowhere\.nii\.gz: label map not found"):
        score(reference, tmp_path / "nowhere.nii.gz")


def test_unreadable_prediction_is_refused_naming_the_file(tmp_path, reference):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(EvaluationInputError, match=r"broken\.nii\.gz: cannot read as a label map"):
        score(reference, broken)


def test_four_dimensional_prediction_is_refused_with_its_shape(tmp_path, reference):
    path = write_nifti(tmp_path / "4d.nii.gz", np.zeros((8, 8, 8, 2), np.uint8), AFFINE)
    with pytest.raises(EvaluationInputError, match=r"4d\.nii\.gz: expected a 3-D label map, got shape \(8, 8, 8, 2\)"):
        score(reference, path)


def test_fractional_prediction_is_refused(tmp_path, reference):
    data = np.zeros((8, 8, 8), np.float32)
    data[1, 1, 1] = 1.5
    path = write_nifti(tmp_path / "frac.nii.gz", data, AFFINE)
    with pytest.raises(EvaluationInputError, match=r"frac\.nii\.gz: label map holds non-integer values"):
        score(reference, path)


def test_negative_prediction_is_refused_with_its_minimum(tmp_path, reference):
    data = np.zeros((8, 8, 8), np.int16)
    data[1, 1, 1] = -3
    path = write_nifti(tmp_path / "neg.nii.gz", data, AFFINE)
    with pytest.raises(EvaluationInputError, match=r"neg\.nii\.gz: label map holds negative values \(min -3\)"):
        score(reference, path)


def test_group_prediction_without_any_group_file_is_refused(tmp_path, reference):
    with pytest.raises(EvaluationInputError, match=r"\{group\}_v\.nii\.gz: no group label map found"):
        score(reference, str(tmp_path / "{group}_v.nii.gz"))


def test_baseline_with_values_outside_its_table_is_refused_naming_file_and_task(tmp_path, reference):
    data = np.zeros((8, 8, 8), np.uint8)
    data[1, 1, 1] = 200
    baseline = write_nifti(tmp_path / "ts.nii.gz", data, AFFINE)
    item = VolumeToScore("v", "unified", reference, reference, baseline)
    with pytest.raises(EvaluationInputError, match=r"ts\.nii\.gz: .*\[200\].*task 'total'"):
        run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML, baseline_mapping_path=baseline_mapping_path(
            "totalsegmentator_v2"))  # fmt: skip


def test_baseline_with_no_task_file_present_is_refused(tmp_path, reference):
    item = VolumeToScore("v", "unified", reference, reference, str(tmp_path / "ts" / "{task}.nii.gz"))
    with pytest.raises(EvaluationInputError, match=r"no baseline prediction file for any task"):
        run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML, baseline_mapping_path=baseline_mapping_path(
            "totalsegmentator_v2"))  # fmt: skip


def test_baseline_prediction_without_a_mapping_table_is_refused(tmp_path, reference):
    item = VolumeToScore("v", "unified", reference, reference, reference)
    with pytest.raises(ValueError, match=r"ref\.nii\.gz: a baseline prediction needs a baseline mapping table"):
        run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML)


def test_named_extra_reference_that_does_not_exist_is_refused(tmp_path, reference):
    item = VolumeToScore("v", "unified", reference, reference, extra_references={"atlas": str(tmp_path / "g.nii.gz")})
    with pytest.raises(EvaluationInputError, match=r"g\.nii\.gz: reference of label set 'atlas'"):
        run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML)


def test_unknown_false_negative_rule_is_refused(tmp_path, reference):
    with pytest.raises(ValueError, match="false_negative_rule.*'strict'"):
        evaluate_volume("v", "unified", reference, {"model": reference}, resolve_alignment("unified"), {},
                        false_negative_rule="strict")  # fmt: skip
