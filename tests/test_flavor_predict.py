"""Flavor prediction jobs: which volumes a part covers, which flavors a priority table selects, and what a job
writes without needing a model (quarantined volumes, gated-out head volumes), its fingerprints and resume."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from cadsflow.flavors.intensity import scale_percentiles
from cadsflow.flavors.predict import FlavorModel, percentile_transform, predict_flavors
from cadsflow.flavors.predict_plan import (
    part_count,
    part_shards,
    part_volumes,
    read_report,
    read_selected_flavors,
    selected_flavors,
)
from cadsflow.pseudolabel.infer import SKIPPED_NO_BRAIN, predict_shard, running_marker, stored_fingerprint
from cadsflow.pseudolabel.shards import Shards
from cadsflow.ranking.tables import rank_scores
from test_pseudolabel_infer import brain_map, standardized

FLAVORS = ("GT", "Pseudo", "Shape")
IDS = [f"ct_{i:02d}" for i in range(10)]


def test_22022_volumes_in_111_shards_make_23_parts_of_5_shards_the_last_with_one():
    assert part_count(111, 5) == 23
    assert part_shards(0, 111, 5) == [0, 1, 2, 3, 4]
    assert part_shards(22, 111, 5) == [110]
    with pytest.raises(IndexError, match="part 23 does not exist: 111 shards make 23 parts of 5 shards"):
        part_shards(23, 111, 5)


def test_a_part_covers_the_members_of_its_shards_except_the_validation_volumes():
    shards = Shards(reversed(IDS), size=2)  # sorted: shard k = ct_2k, ct_2k+1
    assert part_volumes(shards, 0, 2) == ["ct_00", "ct_01", "ct_02", "ct_03"]
    assert part_volumes(shards, 1, 2, excluded={"ct_05", "ct_06"}) == ["ct_04", "ct_07"]
    assert part_volumes(shards, 2, 2) == ["ct_08", "ct_09"]


def test_the_flavors_ranked_first_for_some_structure_of_the_group_are_selected_in_flavor_order():
    rows = [{"group": "551", "structure": "liver", "first": "Shape"},
            {"group": "551", "structure": "spleen", "first": "GT"},
            {"group": "551", "structure": "aorta", "first": "Shape"},
            {"group": "552", "structure": "vertebrae_L1", "first": "Pseudo"}]
    assert selected_flavors(rows, 551, FLAVORS) == ("GT", "Shape")
    assert selected_flavors(rows, "552", FLAVORS) == ("Pseudo",)
    with pytest.raises(ValueError, match="no structure of group 553"):
        selected_flavors(rows, 553, FLAVORS)
    with pytest.raises(ValueError, match="unknown flavor.* Gt first for group 551"):
        selected_flavors([{"group": "551", "structure": "liver", "first": "Gt"}], 551, FLAVORS)


def test_selection_read_from_a_priority_table_the_ranking_wrote(tmp_path):
    n = 12
    scores = tmp_path / "scores.tsv"
    lines = ["structure\tgroup\tflavor\tvolume_id\tsplit_kind\tdice\thd95"]
    for i in range(n):  # liver: Pseudo clearly best; every other structure of 551 has no score
        for flavor, mean in (("GT", 0.6), ("Pseudo", 0.9), ("Shape", 0.7)):
            lines.append(f"liver\t551\t{flavor}\tv{i:02d}\tID\t{mean + 0.01 * (i % 4)}\t{10 * (1 - mean)}")
    scores.write_text("\n".join(lines) + "\n")
    priority = tmp_path / "priority.tsv"
    rank_scores([scores], priority, structures={"551": ["liver", "spleen"]})
    # liver -> Pseudo (significant), spleen (no scores) -> the configured order, GT first
    assert read_selected_flavors(priority, 551, FLAVORS) == ("GT", "Pseudo")


def test_the_flavor_input_scaling_is_the_training_sets_percentile_scaling():
    image = np.arange(1000, dtype=np.int16).reshape(10, 10, 10) - 500
    transform = percentile_transform((5, 95))
    assert transform.key == "scale_percentiles(5,95)"
    np.testing.assert_array_equal(transform.apply(image), scale_percentiles(image, (5.0, 95.0)))
    assert transform.apply(image).flat[0] == 0.0 and transform.apply(image).flat[-1] == 1.0


def _head_job(tmp_path, models, **kwargs):
    """Group 557: one volume with too little brain (gated out, no model needed) and one quarantined volume."""
    volumes = [tmp_path / "standardized" / "ct_a", tmp_path / "standardized" / "ct_q"]
    if not volumes[0].exists():
        standardized(tmp_path, "ct_a")
        standardized(tmp_path, "ct_q", status="quarantined")
        brain_map(tmp_path, "ct_a", n_brain=10)
    report = tmp_path / "pred" / "557" / "validation.tsv"
    outcomes = predict_flavors(models, volumes, tmp_path / "pred" / "557", 557, report,
                               brain_dir=tmp_path / "553", **kwargs)
    return outcomes, report


def _models(tmp_path, flavors=FLAVORS):
    return [FlavorModel(f, tmp_path / "models" / f, "all") for f in flavors]


def test_every_flavor_reports_every_volume_and_writes_its_own_map_without_a_model_when_nothing_is_predicted(tmp_path):
    outcomes, report = _head_job(tmp_path, _models(tmp_path, ("GT", "Shape")))
    assert [(o.volume_id, o.flavor, o.status) for o in read_report(report)] == [
        ("ct_a", "GT", SKIPPED_NO_BRAIN), ("ct_q", "GT", "quarantined"),
        ("ct_a", "Shape", SKIPPED_NO_BRAIN), ("ct_q", "Shape", "quarantined")]
    assert outcomes == read_report(report)
    for flavor in ("GT", "Shape"):
        labels = nib.load(tmp_path / "pred" / "557" / flavor / "ct_a.nii.gz")
        assert labels.shape == (12, 10, 8) and not np.asarray(labels.dataobj).any()
    assert not (tmp_path / "pred" / "557" / "GT" / "ct_q.nii.gz").exists()
    assert not (tmp_path / "pred" / "557" / "Pseudo").exists()
    assert not running_marker(report).exists()


def test_a_flavor_map_fingerprint_names_its_model_and_the_scaling_unlike_the_pseudolabel_of_the_same_volume(tmp_path):
    _head_job(tmp_path, _models(tmp_path, ("GT", "Pseudo")))
    gt = stored_fingerprint(tmp_path / "pred" / "557" / "GT" / "ct_a.nii.gz")
    pseudo = stored_fingerprint(tmp_path / "pred" / "557" / "Pseudo" / "ct_a.nii.gz")
    predict_shard(tmp_path / "models" / "GT", "all", [tmp_path / "standardized" / "ct_a"], tmp_path / "pl", 557,
                  brain_dir=tmp_path / "553")
    unscaled = stored_fingerprint(tmp_path / "pl" / "ct_a.nii.gz")
    assert len({gt, pseudo, unscaled}) == 3 and None not in {gt, pseudo, unscaled}


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_rerun_rewrites_every_map_unless_it_resumes_an_interrupted_job_whose_maps_match(tmp_path, interrupted):
    models = _models(tmp_path, ("GT",))
    _, report = _head_job(tmp_path, models)
    label_map = tmp_path / "pred" / "557" / "GT" / "ct_a.nii.gz"
    os.utime(label_map, ns=(1_000_000_000, 1_000_000_000))
    if interrupted:
        running_marker(report).write_text("running\n")
    _head_job(tmp_path, models)
    assert (label_map.stat().st_mtime_ns == 1_000_000_000) is interrupted
    assert not running_marker(report).exists()


def test_a_flavor_given_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"group 557: a flavor is given twice in \['GT', 'GT'\]"):
        _head_job(tmp_path, _models(tmp_path, ("GT", "GT")))


def test_a_part_job_reads_each_volumes_brain_from_the_553_shard_folder_holding_it_and_writes_its_own_folder(tmp_path):
    """A part covers several pseudo-label shards: the rule passes group 553's shard folders as a list; the maps go
    to the part's declared folder beside its report (<G>/part_<p>/<flavor>/<volume_id>.nii.gz)."""
    for volume_id, shard in (("ct_a", "shard_0"), ("ct_b", "shard_1")):
        standardized(tmp_path, volume_id)
        brain_map(tmp_path / "pl" / shard, volume_id, n_brain=10)  # -> pl/<shard>/553/<id>.nii.gz
    folders = [tmp_path / "pl" / "shard_0" / "553", str(tmp_path / "pl" / "shard_1" / "553")]
    part = tmp_path / "fp" / "557" / "part_0"
    outcomes = predict_flavors(_models(tmp_path, ("GT",)), [tmp_path / "standardized" / v for v in ("ct_a", "ct_b")],
                               part, 557, tmp_path / "fp" / "557" / "part_0.tsv", brain_dir=folders)
    assert [(o.volume_id, o.status) for o in outcomes] == [("ct_a", SKIPPED_NO_BRAIN), ("ct_b", SKIPPED_NO_BRAIN)]
    assert sorted(str(p.relative_to(part)) for p in part.rglob("*")) == ["GT", "GT/ct_a.nii.gz", "GT/ct_b.nii.gz"]


def test_a_job_whose_volumes_are_all_quarantined_still_creates_its_declared_folder(tmp_path):
    volumes = [standardized(tmp_path, "ct_q", status="quarantined")]
    folder = tmp_path / "fp" / "551" / "part_3"
    predict_flavors(_models(tmp_path, ("GT", "Shape")), volumes, folder, 551, tmp_path / "fp" / "551" / "part_3.tsv")
    assert folder.is_dir() and not list(folder.rglob("*.nii.gz"))
    assert [(o.volume_id, o.flavor, o.status) for o in read_report(tmp_path / "fp" / "551" / "part_3.tsv")] == [
        ("ct_q", "GT", "quarantined"), ("ct_q", "Shape", "quarantined")]
