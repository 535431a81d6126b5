"""Oversampling for the final model: frequencies, weights and probabilities reproduced by hand from constructed
occurrence tables (the authors' rule: p < 0.16 -> round(1/p)), the table on disk, the config and the CLI."""

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import write_nifti

from cadsflow.final.__main__ import main
from cadsflow.final.config import (
    BELOW_THRESHOLD,
    FINAL_YAML,
    NO_MINORITY,
    FinalConfigError,
    OversamplingRule,
    final_preset_for_group,
    load_final_preset,
    oversampling_rule,
)
from cadsflow.final.counts import (
    LabelCountError,
    count_labels,
    label_count_table,
    label_count_table_from_provenance,
    read_count_table,
    write_count_table,
)
from cadsflow.final.oversampling import (
    OversamplingError,
    class_weight,
    oversampling_table,
    read_table,
    structure_frequencies,
    write_table,
)
from cadsflow.labels import load_label_space
from cadsflow.specialists.nnunet import TRAINERS_DIR

GROUP = 552
SPACE = load_label_space()
NAMES = list(SPACE.group_label_map(GROUP))  # L5 (1) ... C1 (24)
C_ONE_TO_FIVE = ["vertebrae_C1", "vertebrae_C2", "vertebrae_C3", "vertebrae_C4", "vertebrae_C5"]
AUTHORS_RULE = OversamplingRule(threshold=0.16, minority=tuple(C_ONE_TO_FIVE))


def occurrence_counts(presence: dict[str, list[str]], volumes: list[str]) -> pd.DataFrame:
    """A label-count table of group 552 where each structure has 100 voxels in the volumes listed for it."""
    table = pd.DataFrame(0, index=pd.Index(volumes, name="volume_id"), columns=NAMES, dtype=np.int64)
    for name, members in presence.items():
        table.loc[members, name] = 100
    return table


# 26 volumes: L1 in all (the most frequent, p = 1); C1 in 2 (p = 2/26 = 1/13: weight 13); C2 in 4 (p = 4/26 = 2/13:
# 1/p = 6.5, Python's round -> 6); C3 in 5 (p = 5/26 = 0.192 >= 0.16: weight 1); C4, C5 nowhere (weight 0).
VOLUMES = [f"v{i:02d}" for i in range(26)]
PRESENCE = {
    "vertebrae_L1": VOLUMES,
    "vertebrae_C1": ["v00", "v01"],
    "vertebrae_C2": ["v00", "v01", "v02", "v03"],
    "vertebrae_C3": ["v10", "v11", "v12", "v13", "v14"],
}
# image weights: v00, v01 hold C1 (rarest, 13) and C2; v02, v03 hold C2 (6); the rest 1: total 2*13 + 2*6 + 22 = 60
HAND_IMAGE_WEIGHTS = {v: 13 if v in ("v00", "v01") else 6 if v in ("v02", "v03") else 1 for v in VOLUMES}


def test_weights_follow_the_authors_rule_p_below_016_gets_round_one_over_p():
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    by_name = {s.name: s for s in table.structures}
    assert {n: by_name[n].occurrence for n in ("vertebrae_L1", "vertebrae_C1", "vertebrae_C2", "vertebrae_C3")} == \
        {"vertebrae_L1": 26, "vertebrae_C1": 2, "vertebrae_C2": 4, "vertebrae_C3": 5}
    assert by_name["vertebrae_C1"].frequency == 2 / 26 and by_name["vertebrae_C3"].frequency == 5 / 26
    assert {n: by_name[n].weight for n in ("vertebrae_L1", "vertebrae_C1", "vertebrae_C2", "vertebrae_C3",
                                           "vertebrae_C4", "vertebrae_L5")} == \
        {"vertebrae_L1": 1, "vertebrae_C1": 13, "vertebrae_C2": 6, "vertebrae_C3": 1, "vertebrae_C4": 0,
         "vertebrae_L5": 0}


def test_image_probability_is_the_weight_of_its_rarest_minority_structure_over_the_sum():
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    assert {i.volume_id: i.weight for i in table.images} == HAND_IMAGE_WEIGHTS
    assert {i.volume_id: i.probability for i in table.images} == {v: w / 60 for v, w in HAND_IMAGE_WEIGHTS.items()}
    assert {i.volume_id: i.rarest for i in table.images if i.rarest} == {
        "v00": "vertebrae_C1", "v01": "vertebrae_C1", "v02": "vertebrae_C2", "v03": "vertebrae_C2",
        "v10": "vertebrae_C3", "v11": "vertebrae_C3", "v12": "vertebrae_C3", "v13": "vertebrae_C3",
        "v14": "vertebrae_C3"}


def test_minority_classes_of_552_are_the_authors_label_ids_20_to_24():
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), oversampling_rule(GROUP), SPACE)
    assert table.minority_label_ids == (20, 21, 22, 23, 24)  # count_structure_frequency.py: [20, 21, 22, 23, 24]


def test_below_threshold_choice_makes_every_structure_rarer_than_016_a_minority_class():
    rule = OversamplingRule(threshold=0.16, minority=BELOW_THRESHOLD)
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), rule, SPACE)
    assert [s.name for s in table.structures if s.minority] == ["vertebrae_C2", "vertebrae_C1"]  # label-id order
    assert {i.volume_id: i.weight for i in table.images} == HAND_IMAGE_WEIGHTS


def test_no_minority_classes_samples_every_image_uniformly():
    rule = OversamplingRule(threshold=0.16, minority=NO_MINORITY)
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), rule, SPACE)
    assert table.minority_label_ids == ()
    assert {i.probability for i in table.images} == {1 / 26}


@pytest.mark.parametrize("occurrence, top, weight", [
    (2, 13, 6),   # 1/p = 6.5: halves go to the even integer (Python's round, as the authors' script)
    (2, 17, 8),   # 1/p = 8.5 -> 8
    (1, 14, 14),  # 1/p = 14
    (4, 25, 1),   # p = 0.16 exactly is not below the threshold
    (0, 10, 0),   # never present: weight 0 (the authors' script would divide by zero)
])
def test_class_weight_rounds_like_python_round_and_keeps_the_threshold_strict(occurrence, top, weight):
    p = structure_frequencies({"rare": occurrence, "common": top})["rare"]
    assert class_weight(p, 0.16) == weight


def test_frequencies_need_at_least_one_structure_present():
    with pytest.raises(OversamplingError, match="group 552: no structure occurs"):
        structure_frequencies({"a": 0, "b": 0}, where="group 552")


def test_table_round_trips_exactly_through_its_tsv(tmp_path):
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    write_table(table, tmp_path / "oversampling_552.tsv")
    assert read_table(tmp_path / "oversampling_552.tsv") == table


def test_table_with_probabilities_not_summing_to_one_is_rejected_naming_the_file(tmp_path):
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    path = tmp_path / "t.tsv"
    write_table(table, path)
    lines = path.read_text().splitlines()
    last = lines[-1].split("\t")
    last[-1] = "0.5"
    path.write_text("\n".join([*lines[:-1], "\t".join(last)]) + "\n")
    with pytest.raises(OversamplingError, match=r"t\.tsv: image probabilities sum to"):
        read_table(path)


def test_probabilities_for_a_subset_of_cases_are_aligned_and_renormalised():
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    assert table.probabilities_for(["v02", "v00", "v20"]).tolist() == pytest.approx([6 / 20, 13 / 20, 1 / 20],
                                                                                    rel=1e-12, abs=0)


def test_probabilities_for_an_unlisted_case_name_it():
    table = oversampling_table(GROUP, occurrence_counts(PRESENCE, VOLUMES), AUTHORS_RULE, SPACE)
    with pytest.raises(OversamplingError, match=r"t\.tsv: no probability.*'v99'"):
        table.probabilities_for(["v00", "v99"], where="t.tsv")


def test_count_labels_counts_each_structure_and_rejects_foreign_values():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[0, 0, :3] = 24
    labels[1, 1, 1] = 1
    counts = count_labels(labels, SPACE.group_label_map(GROUP))
    assert counts["vertebrae_C1"] == 3 and counts["vertebrae_L5"] == 1 and sum(counts.values()) == 4
    labels[2, 2, 2] = 25
    with pytest.raises(LabelCountError, match=r"a\.nii\.gz: label values \[25\]"):
        count_labels(labels, SPACE.group_label_map(GROUP), where="a.nii.gz")


def test_label_count_table_names_volumes_after_their_files_and_round_trips(tmp_path):
    a = np.zeros((3, 3, 3), dtype=np.uint8)
    a[0, 0, 0] = 20
    paths = [write_nifti(tmp_path / "maps" / "src_b.nii.gz", np.zeros((3, 3, 3), np.uint8)),
             write_nifti(tmp_path / "maps" / "src_a.nii.gz", a)]
    table = label_count_table(paths, GROUP, SPACE)
    assert list(table.index) == ["src_a", "src_b"] and table.loc["src_a", "vertebrae_C5"] == 1
    write_count_table(table, tmp_path / "counts.tsv")
    pd.testing.assert_frame_equal(read_count_table(tmp_path / "counts.tsv", GROUP, SPACE), table)


PROVENANCE = """volume_id\tgroup\tstructure\torigin\tn_voxels\tml
a\t552\tvertebrae_C1\tPseudo\t40\t0.135
a\t552\tvertebrae_C1\trib_repair\t2\t0.00675
a\t553\tbrain\tGT\t5000\t16.9
b\t552\tvertebrae_L1\tground_truth\t700\t2.36
test_c\t552\tvertebrae_L1\tGT\t900\t3.04
"""


def test_count_table_from_provenance_sums_a_structures_rows_for_the_listed_volumes(tmp_path):
    (tmp_path / "batch.tsv").write_text(PROVENANCE)
    table = label_count_table_from_provenance([tmp_path / "batch.tsv"], GROUP, ["b", "a", "empty"], SPACE)
    assert list(table.index) == ["a", "b", "empty"]  # test_c is not listed; `empty` has no rows: all zeros
    assert table.loc["a", "vertebrae_C1"] == 42 and table.loc["b", "vertebrae_L1"] == 700
    assert int(table.to_numpy().sum()) == 742


def test_count_table_of_another_group_is_rejected_naming_the_file(tmp_path):
    write_count_table(occurrence_counts(PRESENCE, VOLUMES), tmp_path / "c.tsv")
    with pytest.raises(LabelCountError, match=r"c\.tsv: columns are not group 551"):
        read_count_table(tmp_path / "c.tsv", 551, SPACE)


def test_cli_weights_writes_the_table_from_label_maps(tmp_path):
    maps = []
    for i, volume in enumerate(VOLUMES):
        labels = np.zeros((3, 3, 3), dtype=np.uint8)
        for j, (name, members) in enumerate(PRESENCE.items()):
            if volume in members:
                labels.flat[j] = SPACE.group_label_map(GROUP)[name]
        maps.append(write_nifti(tmp_path / "assembled" / f"{volume}.nii.gz", labels))
    out = tmp_path / "oversampling_552.tsv"
    assert main(["weights", "--group", "552", "--label-maps", *maps, "--out", str(out)]) == 0
    assert {i.volume_id: i.weight for i in read_table(out).images} == HAND_IMAGE_WEIGHTS


def test_config_threshold_and_minority_choice_are_data():
    assert oversampling_rule(552) == OversamplingRule(threshold=0.16, minority=tuple(C_ONE_TO_FIVE))
    assert oversampling_rule(551) == OversamplingRule(threshold=0.16, minority=BELOW_THRESHOLD)


def test_config_minority_class_outside_the_group_is_rejected_naming_file_and_key(tmp_path):
    config = yaml.safe_load(FINAL_YAML.read_text())
    config["oversampling"]["minority_classes"][552] = ["vertebrae_C1", "liver"]
    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FinalConfigError, match=r"final\.yaml: oversampling\.minority_classes\.552: \['liver'\]"):
        oversampling_rule(552, path)


def test_paper_preset_is_resenc_l_3d_fullres_fold_all_with_the_stock_schedule():
    paper = load_final_preset("paper")
    assert (paper.planner, paper.plans, paper.configuration, paper.fold) == \
        ("nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans", "3d_fullres", "all")
    assert paper.schedule == {"epochs": 1000, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50}
    assert paper.device == "cuda" and paper.gpus == 1


def test_final_presets_name_trainers_that_the_trainer_folder_defines():
    source = (TRAINERS_DIR / "cads_oversampling_trainers.py").read_text()
    for name in ("smoke", "paper"):
        assert f"class {load_final_preset(name).trainer}(" in source


def test_epochs_by_group_gives_552_the_authors_4000_epochs_and_leaves_other_groups_alone(tmp_path):
    config = yaml.safe_load(FINAL_YAML.read_text())
    config["epochs_by_group"]["paper"] = {552: 4000}
    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump(config))
    assert final_preset_for_group("paper", 552, path).schedule["epochs"] == 4000
    assert final_preset_for_group("paper", 551, path).schedule["epochs"] == 1000
    assert final_preset_for_group("paper", 552).schedule["epochs"] == 1000  # the shipped config: stock epochs


def test_a_config_section_is_not_a_preset():
    with pytest.raises(FinalConfigError, match="section"):
        load_final_preset("oversampling")
