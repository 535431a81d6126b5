"""Reruns of pseudo-label shards: which volumes a sheet change moves to another shard, and what re-predicts.

Shard membership (cadsflow.pseudolabel.shards.Shards): shard k holds the k-th chunk of the sorted volume ids, so
adding one volume moves exactly the later volumes that sit at the end of a chunk into the next shard and leaves every
earlier volume where it was. The expected shards here are written out by hand.

Re-prediction (predict_shard's contract): a head-group volume gated out by too little brain gets an empty map
without a model; once its group-553 brain map changes so that it passes the gate, the rerun must predict it, which
needs the model (here absent, so the job fails naming the model folder), also when the job resumes an interrupted
run of its shard, where a volume is kept only if the fingerprint in its map's header still matches. Reruns after a
changed image or model are tested with a trained smoke model in tests/test_specialists_smoke_training.py (slow).
"""

import os

import nibabel as nib
import numpy as np
import pytest

from cadsflow.pseudolabel.infer import SKIPPED_NO_BRAIN, ModelLoadError, predict_shard, running_marker
from cadsflow.pseudolabel.postprocess import BRAIN_MIN_VOXELS, brain_label_id
from cadsflow.pseudolabel.shards import Shards
from test_pseudolabel_infer import AFFINE, standardized

SHEET = ["ct_00", "ct_01", "ct_02", "ct_03", "ct_04", "ct_05", "ct_06", "ct_07", "ct_08", "ct_09"]


def _membership(shards):
    return {v: shards.of(v) for v in shards.ids}


def test_adding_a_volume_moves_only_later_volumes_at_chunk_ends_into_the_next_shard():
    before = Shards(SHEET, size=4)
    after = Shards([*SHEET, "ct_03a"], size=4)  # sorts between ct_03 and ct_04
    assert [before.members(k) for k in before.indices()] == [
        ["ct_00", "ct_01", "ct_02", "ct_03"], ["ct_04", "ct_05", "ct_06", "ct_07"], ["ct_08", "ct_09"]]
    assert [after.members(k) for k in after.indices()] == [
        ["ct_00", "ct_01", "ct_02", "ct_03"], ["ct_03a", "ct_04", "ct_05", "ct_06"], ["ct_07", "ct_08", "ct_09"]]
    moved = {v for v in SHEET if before.of(v) != after.of(v)}
    assert moved == {"ct_07"}


def test_adding_a_volume_before_all_others_shifts_one_volume_per_chunk_boundary():
    before = Shards(SHEET, size=3)
    after = Shards(["ct_", *SHEET], size=3)  # sorts first
    moved = {v: (before.of(v), after.of(v)) for v in SHEET if before.of(v) != after.of(v)}
    assert moved == {"ct_02": (0, 1), "ct_05": (1, 2), "ct_08": (2, 3)}
    assert len(before) == 4 and len(after) == 4


def test_adding_a_volume_after_all_others_moves_nothing():
    before, after = Shards(SHEET, size=4), Shards([*SHEET, "ct_99"], size=4)
    assert {v: s for v, s in _membership(after).items() if v != "ct_99"} == _membership(before)
    assert after.of("ct_99") == 2 and after.members(2) == ["ct_08", "ct_09", "ct_99"]


def test_a_volume_of_another_source_sorting_in_between_moves_the_later_ones_like_any_other_id():
    sheet = ["kits_000", "kits_001", "saros_000", "saros_001", "saros_002"]
    before, after = Shards(sheet, size=2), Shards([*sheet, "oar_000"], size=2)
    assert [after.members(k) for k in after.indices()] == [
        ["kits_000", "kits_001"], ["oar_000", "saros_000"], ["saros_001", "saros_002"]]
    assert {v for v in sheet if before.of(v) != after.of(v)} == {"saros_001"}


HEAD_SHAPE = (16, 16, 16)  # room for BRAIN_MIN_VOXELS (2000) brain voxels


def _brain(root, volume_id, n_voxels, mtime=None):
    labels = np.zeros(HEAD_SHAPE, dtype=np.uint8)
    labels.reshape(-1)[:n_voxels] = brain_label_id()
    path = root / "553" / f"{volume_id}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), str(path))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_gated_volume_is_predicted_on_rerun_once_its_brain_map_changes_to_pass_the_gate(tmp_path, interrupted):
    """A rerun predicts it whether Snakemake reran the shard (every member is redone) or the job resumes an
    interrupted run of the shard (then the brain map's change must show in the fingerprint the empty map carries)."""
    volume = standardized(tmp_path, "head1", shape=HEAD_SHAPE)
    _brain(tmp_path, "head1", n_voxels=BRAIN_MIN_VOXELS // 10)  # 200 brain voxels: gated out
    out = tmp_path / "558"
    report = out / "shard_0.tsv"
    first = predict_shard(tmp_path / "no_model", "all", [volume], out, 558, brain_dir=tmp_path / "553",
                          report_path=report)
    assert [o.status for o in first.outcomes] == [SKIPPED_NO_BRAIN] and first.model_loads == 0
    assert not np.asanyarray(nib.load(out / "head1.nii.gz").dataobj).any()

    again = predict_shard(tmp_path / "no_model", "all", [volume], out, 558, brain_dir=tmp_path / "553",
                          report_path=report)
    assert [o.status for o in again.outcomes] == [SKIPPED_NO_BRAIN] and again.model_loads == 0  # nothing changed

    # group 553 was re-predicted and its brain now passes the gate: the head group must predict (load the model)
    newer = (out / "head1.nii.gz").stat().st_mtime + 10  # later than the empty map, whatever the clock's tick
    _brain(tmp_path, "head1", n_voxels=BRAIN_MIN_VOXELS, mtime=newer)
    if interrupted:
        running_marker(report).write_text("running\n")  # what a killed run of this shard leaves behind
    with pytest.raises(ModelLoadError, match="no_model"):
        predict_shard(tmp_path / "no_model", "all", [volume], out, 558, brain_dir=tmp_path / "553",
                      report_path=report)
