"""The final stage's jobs on constructed inputs whose right answer is known: the training data of a group (rule
final_dataset: head subsets, counts and weights from the assembly's provenance tables, the nnU-Net raw dataset) and
the training job's environment (rule final_train: the oversampling table reaches the trainer)."""

import json

import numpy as np
import pytest

from helpers import write_nifti

from cadsflow.assembly.provenance import EMPTY, QUARANTINED, AssemblyRow, write_provenance
from cadsflow.final.config import FINAL_YAML, FinalConfigError, final_preset_for_group, head_subset_rules
from cadsflow.final.counts import read_count_table
from cadsflow.final.dataset import FinalCandidate, FinalDatasetError, prepare_training_data
from cadsflow.final.oversampling import OVERSAMPLING_TABLE_ENV, read_table
from cadsflow.final.train import final_training_env
from cadsflow.labels import load_label_space
from cadsflow.specialists.nnunet import SCHEDULE_ENV, NnunetDirs

SPACE = load_label_space()
VOXEL_ML = 1.5**3 / 1000


def row(volume_id, group, structure, n_voxels, origin="Pseudo"):
    return AssemblyRow(volume_id, group, structure, origin, n_voxels, n_voxels * VOXEL_ML)


def candidates(tmp_path, group, volume_ids, without_map=(), without_image=()):
    """Each volume: a tiny standardized image and assembled map on disk (except those named), as the rule lists them."""
    out = []
    for v in volume_ids:
        image, label = tmp_path / "std" / v / "image.nii.gz", tmp_path / "assembled" / str(group) / f"{v}.nii.gz"
        if v not in without_image:
            image.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(image, np.zeros((3, 3, 3), np.int16))
        if v not in without_map:
            label.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(label, np.zeros((3, 3, 3), np.uint8))
        out.append(FinalCandidate(v, "src", str(image), str(label)))
    return out


def run_job(tmp_path, group, cands, rows):
    """What rule final_dataset does before planning, into tmp_path/out."""
    provenance = tmp_path / "provenance" / "batch.tsv"
    write_provenance(rows, provenance)
    out = tmp_path / "out"
    dataset = out / f"Dataset{group}_Test"
    training = prepare_training_data(group, cands, [provenance], dataset, out / "counts.tsv", out / "table.tsv",
                                     FINAL_YAML, SPACE)
    return training, dataset, out


def test_557_trains_on_the_volumes_whose_assembled_553_brain_exceeds_2000_voxels(tmp_path):
    cands = candidates(tmp_path, 557, ["a", "b", "c", "d"], without_map=["d"])
    rows = [row("a", 553, "brain", 2001), row("b", 553, "brain", 2000), row("c", 553, "brain", 1500),
            row("c", 553, "brain", 600, origin="ground_truth"),  # c: 2,100 in two rows
            row("d", 553, "brain", 9000),  # no 557 map: not a candidate
            row("a", 557, "gray matter", 40), row("b", 557, "gray matter", 40), row("c", 557, "gray matter", 40)]
    training, dataset, out = run_job(tmp_path, 557, cands, rows)
    assert [c.volume_id for c in training.cases] == ["a", "c"] and training.num_candidates == 3
    spec = json.loads((dataset / "dataset.json").read_text())
    assert spec["numTraining"] == 2 and "ignore" not in spec["labels"]
    assert spec["labels"] == {"background": 0, **SPACE.group_label_map(557)}
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == ["a_0000.nii.gz", "c_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["a.nii.gz", "c.nii.gz"]
    assert list(read_count_table(out / "counts.tsv", 557).index) == ["a", "c"]


def test_558_trains_on_the_volumes_with_at_least_24_of_its_structures(tmp_path):
    names = list(SPACE.group_label_map(558))
    cands = candidates(tmp_path, 558, ["many", "few"])
    rows = [row("many", 558, n, 10) for n in names[:24]] + [row("few", 558, n, 10) for n in names[:23]]
    training, _, out = run_job(tmp_path, 558, cands, rows)
    assert [c.volume_id for c in training.cases] == ["many"]
    counts = read_count_table(out / "counts.tsv", 558)
    assert (counts.loc["many"] > 0).sum() == 24


def test_the_demo_preset_asks_558_for_8_structures_and_the_paper_preset_keeps_24(tmp_path):
    assert head_subset_rules(FINAL_YAML, SPACE, "smoke")[558].structures == 8
    assert head_subset_rules(FINAL_YAML, SPACE, "paper")[558].structures == 24
    assert head_subset_rules(FINAL_YAML, SPACE, "smoke")[557] == head_subset_rules(FINAL_YAML, SPACE)[557]
    bad = tmp_path / "final.yaml"
    bad.write_text(FINAL_YAML.read_text().replace("smoke: {558: {structures: 8}}", "smoke: {551: {structures: 8}}"))
    with pytest.raises(FinalConfigError, match=r"head_subsets_by_preset\.smoke: group 551 has no rule"):
        head_subset_rules(bad, SPACE, "smoke")


def test_weights_and_probabilities_of_the_job_follow_the_authors_rule_on_known_counts(tmp_path):
    # 20 volumes of group 552: L1 in all (p = 1); C1 in 1 (p = 0.05 -> weight 20); C2 in 3 (p = 0.15 -> round(6.67)
    # = 7); C3 in 4 (p = 0.2: weight 1). C1-C5 are 552's minority classes (config/final.yaml): an image takes the
    # weight of its rarest one: v00 has C1 and C2 -> 20; v01, v02 have C2 -> 7; the 17 others 1. Sum = 20 + 14 + 17.
    volumes = [f"v{i:02d}" for i in range(20)]
    rows = [row(v, 552, "vertebrae_L1", 500) for v in volumes]
    rows += [row("v00", 552, "vertebrae_C1", 30)] + [row(v, 552, "vertebrae_C2", 30) for v in volumes[:3]]
    rows += [row(v, 552, "vertebrae_C3", 30) for v in volumes[:4]]
    rows += [AssemblyRow("v19", 552, "", EMPTY, 0, 0.0), AssemblyRow("q", 552, "", QUARANTINED, 0, 0.0)]
    _, dataset, out = run_job(tmp_path, 552, candidates(tmp_path, 552, volumes), rows)
    table = read_table(out / "table.tsv")
    weights = {s.name: s.weight for s in table.structures}
    assert (weights["vertebrae_L1"], weights["vertebrae_C1"], weights["vertebrae_C2"], weights["vertebrae_C3"]) == (
        1, 20, 7, 1)
    probability = {i.volume_id: i.probability for i in table.images}
    assert probability["v00"] == pytest.approx(20 / 51) and probability["v01"] == pytest.approx(7 / 51)
    assert probability["v05"] == pytest.approx(1 / 51) and len(probability) == 20
    assert table.minority_label_ids == (20, 21, 22, 23, 24)  # C5 ... C1: the authors' minority_class_indices_in_group
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 20


def test_a_volume_without_its_assembled_map_or_image_does_not_train(tmp_path):
    cands = candidates(tmp_path, 551, ["kept", "no_map", "no_image"], without_map=["no_map"],
                       without_image=["no_image"])
    rows = [row(v, 551, "spleen", 50) for v in ("kept", "no_map", "no_image")]
    training, _, out = run_job(tmp_path, 551, cands, rows)
    assert [c.volume_id for c in training.cases] == ["kept"]
    assert [i.volume_id for i in read_table(out / "table.tsv").images] == ["kept"]


def _with_empty_head_subset(tmp_path, choice):
    final_yaml = tmp_path / "final.yaml"
    text = FINAL_YAML.read_text()
    assert "empty_head_subset: all_candidates\n" in text
    final_yaml.write_text(text.replace("empty_head_subset: all_candidates\n", f"empty_head_subset: {choice}\n"))
    return final_yaml


def test_a_head_subset_that_keeps_no_volume_fails_naming_group_and_rule_when_configured_to(tmp_path):
    cands = candidates(tmp_path, 557, ["a"])
    provenance = tmp_path / "provenance" / "batch.tsv"
    write_provenance([row("a", 553, "brain", 100), row("a", 557, "gray matter", 40)], provenance)
    with pytest.raises(FinalDatasetError, match=r"group 557: none of 1 candidate.*head_subsets\.557"):
        prepare_training_data(557, cands, [provenance], tmp_path / "out" / "Dataset557_Test", tmp_path / "c.tsv",
                              tmp_path / "t.tsv", _with_empty_head_subset(tmp_path, "fail"), SPACE)


def test_a_head_subset_that_keeps_no_volume_trains_on_every_candidate_by_default(tmp_path):
    cands = candidates(tmp_path, 557, ["a", "b"])
    rows = [row("a", 553, "brain", 100), row("b", 553, "brain", 1999),
            row("a", 557, "gray matter", 40), row("b", 557, "gray matter", 40)]
    training, _, _ = run_job(tmp_path, 557, cands, rows)
    assert [c.volume_id for c in training.cases] == ["a", "b"]  # no brain over 2,000 voxels: all candidates


def test_a_volume_whose_assembled_map_is_empty_does_not_train_nor_count_for_the_head_subset(tmp_path):
    cands = candidates(tmp_path, 557, ["brain_only", "labelled"])
    rows = [row("brain_only", 553, "brain", 5000),  # passes the 553 brain rule, but its 557 map is empty
            row("labelled", 553, "brain", 100), row("labelled", 557, "gray matter", 40)]
    training, _, _ = run_job(tmp_path, 557, cands, rows)
    # the only labelled candidate fails the brain rule: the subset is empty, so every labelled candidate trains
    assert [c.volume_id for c in training.cases] == ["labelled"] and training.num_candidates == 1


def test_training_environment_hands_the_table_and_the_groups_epochs_to_the_trainer(tmp_path, monkeypatch):
    final_yaml = tmp_path / "final.yaml"
    final_yaml.write_text(FINAL_YAML.read_text().replace("  smoke: {}\n", "  smoke: {552: 3}\n"))
    preset = final_preset_for_group("smoke", 552, final_yaml)
    dirs = NnunetDirs(tmp_path / "raw", tmp_path / "pre", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    env = final_training_env(dirs, preset, "sampling/Dataset552_Vertebrae.tsv", base={})
    assert env[OVERSAMPLING_TABLE_ENV] == str(tmp_path / "sampling" / "Dataset552_Vertebrae.tsv")
    assert env[SCHEDULE_ENV["epochs"]] == "3" and env["nnUNet_results"] == str(tmp_path / "models")
    assert final_preset_for_group("smoke", 551, final_yaml).schedule == final_preset_for_group("smoke", 551).schedule


@pytest.mark.slow
def test_predict_stage_of_a_run_waits_for_its_final_models(tmp_path):
    """cads-predict over a sheet with this run's models (predict.models: results) takes the final models, so the
    DAG trains them first: a dry run plans every final_train job for the predict batch."""
    from workflow_runner import snakemake, write_config

    image = write_nifti(tmp_path / "ct.nii.gz", np.zeros((4, 4, 4), np.int16))
    sheet = tmp_path / "predict.tsv"
    sheet.write_text(f"volume_id\timage\nct_a\t{image}\n")
    config = write_config(tmp_path, predict={"sheet": str(sheet), "groups": [551]})
    proc = snakemake(tmp_path, "results/predict/predict.0000.tsv", "-n", "--quiet", "rules", config=config)
    jobs = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("final_"))
    assert jobs.get("final_train") == "1" and "final_predict" not in jobs, proc.stdout
