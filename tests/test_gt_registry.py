"""The CADS collection registry (config/sources/cads_collection.yaml) and the group training table."""

import pytest

from cadsflow.gt.mapping import exact_groups, label_sets
from cadsflow.gt.training import GroupTraining, check_known_sources, load_group_training, TrainingConfigError
from cadsflow.labels import GROUP_IDS, load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.sources import RegistryError, load_registry

REGISTRY = CONFIG_DIR / "sources" / "cads_collection.yaml"
GROUP_TRAINING = CONFIG_DIR / "group_training.yaml"
# Table 1 / Table A.3 (paper): totals of the collection
N_SOURCES = 40
TOTAL_VOLUMES = 22_022
ANNOTATED_VOLUMES = 4_695
A3_TRAIN_WITH, A3_TRAIN_WITHOUT, A3_TEST = 3_950, 17_327, 745


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY)


@pytest.fixture(scope="module")
def space():
    return load_label_space()


def test_registry_has_one_entry_per_table1_source(registry):
    assert len(registry) == N_SOURCES


def test_every_mapped_name_of_every_label_set_is_a_unified_structure(registry, space):
    names = set(space.names())
    for source in registry.values():
        for label_set in label_sets(source, space).values():  # parses and validates extra sets too
            for value in label_set.label_values.values():
                assert set(value.targets) <= names, (source.name, label_set.name, value)


def test_table1_volume_counts_add_up_to_the_paper_totals(registry):
    # the paper's totals do not count Table 1's two label-only rows (their volumes are those of their sources)
    assert sum(s.extra["paper_table1"]["volumes"] for s in registry.values()) == TOTAL_VOLUMES
    assert sum(s.extra["paper_table1"]["annotated_volumes"] for s in registry.values()) == ANNOTATED_VOLUMES


def test_table_a3_split_counts_add_up_to_the_paper_totals(registry):
    a3 = [s.extra["table_a3"] for s in registry.values()]
    assert sum(t["train_with_annotations"] for t in a3) == A3_TRAIN_WITH
    assert sum(t["train_without_annotations"] for t in a3) == A3_TRAIN_WITHOUT
    assert sum(t["test"] for t in a3) == A3_TEST


def test_annotated_sources_have_labels_and_unannotated_ones_have_none(registry):
    for s in registry.values():
        annotated = s.extra["paper_table1"]["annotated_volumes"] > 0
        assert bool(s.labels) == annotated == bool(s.label_values), s.name


def test_kidney_and_lung_unions_and_lesions_are_explicit(registry):
    kits, lits, ctorg = registry["kits"], registry["lits"], registry["ct_org"]
    assert kits.label_values[1].kind == "union" and set(kits.label_values[1].targets) == {"kidney_left", "kidney_right"}
    assert {kits.label_values[2].kind, kits.label_values[3].kind} == {"lesion_of"}
    assert lits.label_values[2].kind == "lesion_of" and lits.label_values[2].targets == ("liver",)
    assert ctorg.label_values[3].kind == "union" and len(ctorg.label_values[3].targets) == 5  # five lung lobes


def test_saros_is_sparse_with_255_unannotated_and_new_head_cts_are_anonymized(registry):
    saros = registry["saros"]
    assert saros.sparse_slices == 5 and saros.label_values[255].kind == "unannotated"
    assert registry["head_ct_medipol"].anonymize_face and not registry["head_ct_medipol"].labels


def test_totalsegmentator_v1_values_cover_groups_551_to_555_completely(registry, space):
    ts = registry["totalsegmentator"]
    mapped = {v.targets[0] for v in ts.label_values.values() if v.kind == "structure"}
    for group in (551, 552, 553, 554, 555):
        assert set(space.group_label_map(group)) <= mapped, group
    assert exact_groups(ts.label_values, space) == (551, 552, 553, 554, 555)


def test_a_todo_mapping_refuses_to_be_used(tmp_path, space):
    path = tmp_path / "r.yaml"
    path.write_text("sources:\n  pending:\n    images: i/{case}.nii.gz\n    labels: l/{case}.nii.gz\n"
                    "    mapping_status: todo\n    label_values: {1: liver}\n")
    source = load_registry(path)["pending"]
    with pytest.raises(RegistryError, match="pending.*TODO"):
        label_sets(source, space)["main"].require_mapping(source.name)


def test_group_training_presets_name_all_nine_datasets_and_known_sources(registry):
    for preset in ("paper", "smoke"):
        training = load_group_training(GROUP_TRAINING, preset)
        assert sorted(training) == list(GROUP_IDS)
        assert all(isinstance(t, GroupTraining) and t.sources for t in training.values())
    paper = load_group_training(GROUP_TRAINING, "paper")
    check_known_sources(paper, set(registry))  # raises if the paper preset names a source the registry lacks
    assert paper[557].labels_from == "atlas" and paper[557].dataset_name == "Dataset557_Brain"


def test_group_training_rejects_an_unknown_preset_and_names_the_file(tmp_path):
    with pytest.raises(TrainingConfigError, match="group_training.yaml.*nightly"):
        load_group_training(GROUP_TRAINING, "nightly")


def test_unknown_training_source_is_reported_with_its_group():
    training = {551: GroupTraining(551, "Organs", "source", ("nowhere",))}
    with pytest.raises(TrainingConfigError, match=r"nowhere \(group 551\)"):
        check_known_sources(training, {"kits"})


def test_ct_org_brain_value_is_unmapped_like_the_authors_and_five_structures_remain(registry):
    ctorg = registry["ct_org"]
    kinds = {v: m.kind for v, m in ctorg.label_values.items()}
    assert kinds == {1: "structure", 2: "structure", 3: "union", 4: "union", 5: "ignore", 6: "ignore"}
    assert ctorg.extra["paper_table1"]["annotated_structures"] == 5
