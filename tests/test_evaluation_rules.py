"""The paper's false-negative penalty and exclusions (Online Methods 5.1), reference volumes, and one volume's
score table end to end."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from helpers import spacing_affine, write_nifti

from cadsflow.evaluation.alignment import resolve_alignment
from cadsflow.evaluation.evaluate import EvaluationInputError, evaluate_volume, write_scores
from cadsflow.evaluation.metrics import RawScores
from cadsflow.evaluation.volumes import (
    ABSENT,
    EXCLUDED_SMALL,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    MISSED_PARTIAL,
    SCORED,
    apply_paper_rules,
    compute_reference_volumes,
    load_reference_volumes,
    structure_volumes_ml,
    write_reference_volumes,
)
from cadsflow.labels import load_label_space
from cadsflow.paths import CONFIG_DIR

DIAGONAL = 500.0
VOXEL_ML = 0.001  # 1 mm^3 voxels


def raw(ref_voxels, pred_voxels, dice=0.9, nsd=0.95, hd=4.0, hd95=2.0):
    return RawScores(ref_voxels, pred_voxels, min(ref_voxels, pred_voxels), dice, nsd, hd, hd95)


def test_missed_structure_above_90_percent_of_its_volume_is_a_penalised_false_negative():
    result = apply_paper_rules(raw(950, 0, math.nan, math.nan, math.inf, math.inf), VOXEL_ML, 1.0, DIAGONAL)
    assert (result.status, result.dice, result.nsd, result.hd, result.hd95) == (FALSE_NEGATIVE, 0.0, 0.0, DIAGONAL, DIAGONAL)


def test_paper_text_excludes_a_structure_under_10_percent_of_its_volume_even_when_predicted():
    result = apply_paper_rules(raw(90, 80), VOXEL_ML, 1.0, DIAGONAL, rule="paper_text")
    assert result.status == EXCLUDED_SMALL and math.isnan(result.dice)


def test_paper_text_neither_penalises_nor_scores_a_missed_partially_visible_structure():
    result = apply_paper_rules(raw(500, 0), VOXEL_ML, 1.0, DIAGONAL, rule="paper_text")
    assert result.status == MISSED_PARTIAL and math.isnan(result.hd)


# -- the authors' rule (murong-xu/CADS utils/compute_metrics.py), the default -----------------------------------


def test_authors_rule_scores_a_predicted_structure_however_small_its_reference():
    result = apply_paper_rules(raw(90, 80, 0.8, 0.7, 6.0, 3.0), VOXEL_ML, 1.0, DIAGONAL)  # 9% of the statistic
    assert (result.status, result.dice, result.nsd, result.hd, result.hd95) == (SCORED, 0.8, 0.7, 6.0, 3.0)


def test_authors_rule_penalises_a_missed_structure_between_10_and_90_percent():
    result = apply_paper_rules(raw(500, 0, math.nan, math.nan, math.inf, math.inf), VOXEL_ML, 1.0, DIAGONAL)
    assert (result.status, result.dice, result.nsd, result.hd, result.hd95) == (FALSE_NEGATIVE, 0.0, 0.0, DIAGONAL, DIAGONAL)


def test_authors_rule_ignores_a_missed_structure_at_or_under_10_percent():
    at_limit = apply_paper_rules(raw(100, 0), VOXEL_ML, 1.0, DIAGONAL)  # 0.1 mL of 1 mL: `volume <= 0.1 * avg`
    above = apply_paper_rules(raw(101, 0), VOXEL_ML, 1.0, DIAGONAL)
    assert (at_limit.status, above.status) == (EXCLUDED_SMALL, FALSE_NEGATIVE) and math.isnan(at_limit.dice)


def test_an_unknown_false_negative_rule_is_refused():
    with pytest.raises(ValueError, match="false-negative rule.*'lenient'"):
        apply_paper_rules(raw(10, 0), VOXEL_ML, 1.0, DIAGONAL, rule="lenient")


def test_structure_absent_in_both_is_reported_absent_not_perfect():
    result = apply_paper_rules(raw(0, 0, math.nan, math.nan, math.inf, math.inf), VOXEL_ML, 1.0, DIAGONAL)
    assert result.status == ABSENT and math.isnan(result.dice) and math.isnan(result.hd)


def test_prediction_without_reference_is_a_false_positive_with_zero_dice():
    result = apply_paper_rules(raw(0, 300, 0.0, 0.0, math.inf, math.inf), VOXEL_ML, 1.0, DIAGONAL)
    assert (result.status, result.dice, result.hd) == (FALSE_POSITIVE, 0.0, DIAGONAL)


def test_found_structure_keeps_its_raw_scores():
    result = apply_paper_rules(raw(1000, 900, 0.8, 0.7, 6.0, 3.0), VOXEL_ML, 1.0, DIAGONAL)
    assert (result.status, result.dice, result.nsd, result.hd, result.hd95) == (SCORED, 0.8, 0.7, 6.0, 3.0)


def test_without_a_reference_volume_nothing_is_excluded_and_every_miss_is_penalised():
    result = apply_paper_rules(raw(5, 0), VOXEL_ML, None, DIAGONAL)
    assert result.status == FALSE_NEGATIVE


def test_shipped_reference_volumes_cover_all_structures_in_ml_from_table_a5():
    table = load_reference_volumes(CONFIG_DIR / "reference_volumes.tsv")
    names = set(load_label_space().names())
    # Table A.5: liver median 430,341 voxels of 1.5 mm -> 1452.4 mL
    assert set(table) == names and table["liver"] == pytest.approx(430341 * 3.375 / 1000, abs=1e-3)


def test_cohort_reference_volumes_are_means_over_the_volumes_that_contain_the_structure(tmp_path):
    labels = [np.array([[[1, 1, 2, 0]]]), np.array([[[1, 1, 1, 1]]]), np.array([[[0, 0, 0, 0]]])]
    per_volume = [structure_volumes_ml(a, 2.0, {"a": 1, "b": 2}) for a in labels]
    rows = compute_reference_volumes(per_volume)
    write_reference_volumes(rows, tmp_path / "volumes.tsv")
    table = load_reference_volumes(tmp_path / "volumes.tsv")
    # a: 4 mL and 8 mL -> 6; b: 2 mL in one volume only
    assert table == {"a": 6.0, "b": 2.0} and [r["occurrence"] for r in rows] == [2, 1]


def test_reference_volume_table_errors_name_the_file_and_row(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\treference_volume_ml\nliver\tlots\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2"):
        load_reference_volumes(bad)


# -- one volume end to end -------------------------------------------------------------------------------------


def unified_pair(tmp_path, spacing=(1.5, 1.5, 1.5)):
    """Reference with spleen (1), liver (5) and a tiny adrenal (11); prediction finds spleen, misses liver."""
    space = load_label_space()
    shape = (40, 40, 30)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[5:15, 5:15, 5:15] = space.by_name("spleen").global_id
    pred[6:15, 5:15, 5:15] = space.by_name("spleen").global_id
    ref[20:38, 20:38, 5:25] = space.by_name("liver").global_id
    ref[2, 30, 2] = space.by_name("adrenal_gland_right").global_id
    affine = spacing_affine(spacing)
    return (write_nifti(tmp_path / "ref.nii.gz", ref, affine), write_nifti(tmp_path / "pred.nii.gz", pred, affine),
            shape)  # fmt: skip


def rows_by_structure(rows, system="model"):
    return {r["structure"]: r for r in rows if r["system"] == system}


def test_volume_table_penalises_the_missed_liver_with_the_image_diagonal(tmp_path):
    ref, pred, shape = unified_pair(tmp_path)
    volumes = {"liver": 10.0, "spleen": 3.0, "adrenal_gland_right": 5.0}  # liver in the reference: 21.9 mL
    rows = evaluate_volume("v1", "unified", ref, {"model": pred}, resolve_alignment("unified"), volumes)
    liver = rows_by_structure(rows)["liver"]
    diagonal = math.sqrt(sum((n * 1.5) ** 2 for n in shape))
    assert (liver["status"], liver["dice"], liver["hd95"]) == (FALSE_NEGATIVE, 0.0, pytest.approx(diagonal))


def test_volume_table_excludes_the_one_voxel_adrenal_and_scores_the_spleen(tmp_path):
    ref, pred, _ = unified_pair(tmp_path)
    volumes = {"liver": 10.0, "spleen": 3.0, "adrenal_gland_right": 5.0}
    rows = rows_by_structure(evaluate_volume("v1", "unified", ref, {"model": pred}, resolve_alignment("unified"), volumes))
    assert rows["adrenal_gland_right"]["status"] == EXCLUDED_SMALL
    assert rows["spleen"]["status"] == SCORED and rows["spleen"]["dice"] == pytest.approx(2 * 900 / 1900)


def test_batch_default_rule_is_the_authors_and_paper_text_is_an_option(tmp_path):
    """A missed liver at 2.2x its statistic and a predicted one-voxel adrenal: the rules part on the adrenal."""
    from cadsflow.evaluation.alignment import ALIGNMENT_YAML
    from cadsflow.evaluation.evaluate import VolumeToScore, run_batch

    ref, _, _ = unified_pair(tmp_path)
    volumes = tmp_path / "volumes.tsv"
    volumes.write_text("name\treference_volume_ml\nliver\t10.0\nspleen\t3.0\nadrenal_gland_right\t5.0\n")
    item = VolumeToScore("v1", "unified", ref, ref)  # the reference predicts itself: the adrenal is found
    default = rows_by_structure(run_batch([item], tmp_path / "a.tsv", ALIGNMENT_YAML, reference_volumes_path=volumes))
    text = rows_by_structure(run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML, reference_volumes_path=volumes,
                                       false_negative_rule="paper_text"))  # fmt: skip
    assert (default["adrenal_gland_right"]["status"], default["adrenal_gland_right"]["dice"]) == (SCORED, 1.0)
    assert text["adrenal_gland_right"]["status"] == EXCLUDED_SMALL


def test_volume_table_lists_every_unified_structure_once_per_system(tmp_path):
    ref, pred, _ = unified_pair(tmp_path)
    rows = evaluate_volume("v1", "unified", ref, {"model": pred, "baseline": pred}, resolve_alignment("unified"), {})
    assert len(rows) == 2 * 167 and sum(r["status"] == ABSENT for r in rows) == 2 * 164


def test_baseline_is_scored_only_on_the_structures_it_covers(tmp_path):
    ref, pred, _ = unified_pair(tmp_path)
    rows = evaluate_volume("v1", "unified", ref, {"model": pred, "baseline": pred}, resolve_alignment("unified"), {},
                           covered={"baseline": frozenset({"spleen", "liver"})})  # fmt: skip
    assert sorted(rows_by_structure(rows, "baseline")) == ["liver", "spleen"]


def test_written_score_table_keeps_nan_empty_and_infinity_readable(tmp_path):
    rows = [dict(volume_id="v", source="s", system="model", structure="x", status=ABSENT, dice=math.nan,
                 nsd=math.nan, hd=math.inf, hd95=1.25)]  # fmt: skip
    write_scores(rows, tmp_path / "s.tsv")
    row = next(csv.DictReader(open(tmp_path / "s.tsv"), delimiter="\t"))
    assert (row["dice"], row["hd"], row["hd95"]) == ("", "inf", "1.250000")


def test_prediction_on_another_grid_is_refused_naming_both_files(tmp_path):
    ref, _, _ = unified_pair(tmp_path)
    other = write_nifti(tmp_path / "other.nii.gz", np.zeros((10, 10, 10), np.uint8), spacing_affine((1.5,) * 3))
    with pytest.raises(EvaluationInputError, match=r"other.nii.gz.*ref.nii.gz"):
        evaluate_volume("v1", "unified", ref, {"model": other}, resolve_alignment("unified"), {})


def test_quarantined_volume_adds_no_rows_to_its_batch_table(tmp_path):
    from cadsflow.evaluation.alignment import ALIGNMENT_YAML
    from cadsflow.evaluation.evaluate import VolumeToScore, run_batch

    standardized = tmp_path / "standardized" / "v1"
    standardized.mkdir(parents=True)  # only a record.json would be there
    item = VolumeToScore("v1", "unified", str(standardized), str(tmp_path / "pred.nii.gz"))
    rows = run_batch([item], tmp_path / "batch.tsv", ALIGNMENT_YAML)
    assert rows == [] and (tmp_path / "batch.tsv").read_text().startswith("volume_id\tsource")


def test_batch_scores_a_baseline_given_in_its_own_labels_on_its_mapped_structures(tmp_path):
    from cadsflow.evaluation.alignment import ALIGNMENT_YAML
    from cadsflow.evaluation.baseline import baseline_mapping_path
    from cadsflow.evaluation.evaluate import VolumeToScore, run_batch

    ref, pred, shape = unified_pair(tmp_path)
    ts = np.zeros(shape, np.uint8)
    ts[5:15, 5:15, 5:15] = 1  # TotalSegmentator v2 spleen, exactly the reference spleen
    baseline = write_nifti(tmp_path / "ts.nii.gz", ts, spacing_affine((1.5, 1.5, 1.5)))
    item = VolumeToScore("v1", "unified", ref, pred, baseline)
    rows = run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML,
                     baseline_mapping_path=baseline_mapping_path("totalsegmentator_v2"))  # fmt: skip
    baseline_rows = rows_by_structure(rows, "baseline")
    assert baseline_rows["spleen"]["dice"] == 1.0 and len(baseline_rows) == 104


def test_cohort_table_has_one_mean_volume_per_class_of_each_source(tmp_path):
    import yaml

    from cadsflow.evaluation.evaluate import cohort_reference_volumes

    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"sources": {"src": {
        "images": "i/{case}.nii.gz", "labels": "l/{case}.nii.gz",
        "label_values": {1: {"union": ["kidney_left", "kidney_right"], "name": "kidneys"}, 2: "liver"}}}}))  # fmt: skip
    affine = spacing_affine((2.0, 1.0, 1.0))  # 2 mm^3 voxels
    a = np.zeros((10, 10, 10), np.uint8)
    a[:5, :5, :5] = 1  # 125 voxels = 0.25 mL of kidneys
    b = np.zeros((10, 10, 10), np.uint8)
    b[:5, :5, :3] = 1  # 75 voxels = 0.15 mL
    b[5:, 5:, 5:] = 2
    refs = [(write_nifti(tmp_path / "a.nii.gz", a, affine), "src"), (write_nifti(tmp_path / "b.nii.gz", b, affine), "src")]
    cohort_reference_volumes(refs, tmp_path / "vol.tsv", CONFIG_DIR / "evaluation_alignment.yaml", registry)
    assert load_reference_volumes(tmp_path / "vol.tsv") == pytest.approx({"kidneys": 0.2, "liver": 0.25})


def test_group_layered_prediction_scores_overlapping_structures_each_on_its_own_group_map(tmp_path):
    """heart (group 556) and the heart chambers (553) share voxels: a per-group prediction keeps both exact."""
    import nibabel as nib

    from cadsflow.labels import load_label_space

    space = load_label_space()
    shape = (24, 24, 24)
    heart = np.zeros(shape, bool)
    heart[6:18, 6:18, 6:18] = True
    ref = np.zeros(shape, np.uint8)
    ref[heart] = space.by_name("heart").global_id
    ref[6:18, 6:12, 6:18] = space.by_name("heart_atrium_left").global_id  # the reference holds one label per voxel
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(ref, np.eye(4)), str(ref_path))
    g556 = np.where(heart, space.by_name("heart").label_id, 0).astype(np.uint8)
    g553 = np.zeros(shape, np.uint8)
    g553[6:18, 6:12, 6:18] = space.by_name("heart_atrium_left").label_id
    nib.save(nib.Nifti1Image(g556, np.eye(4)), str(tmp_path / "556_v1.nii.gz"))
    nib.save(nib.Nifti1Image(g553, np.eye(4)), str(tmp_path / "553_v1.nii.gz"))
    rows = rows_by_structure(
        evaluate_volume("v1", "unified", ref_path, {"model": str(tmp_path / "{group}_v1.nii.gz")},
                        resolve_alignment("unified"), {})
    )
    assert rows["heart_atrium_left"]["dice"] == 1.0
    # the reference's heart label lost its 864 atrium voxels to the atrium; the group-556 map still holds all 1728:
    # Dice = 2 * 864 / (864 + 1728) = 2/3
    assert rows["heart"]["dice"] == pytest.approx(2 / 3, abs=1e-12) and rows["heart"]["status"] == SCORED
    assert rows["liver"]["status"] == "absent"  # group 551 has no map: nothing predicted, nothing referenced
