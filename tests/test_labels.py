import pytest

from cadsflow.labels import GROUP_IDS, N_STRUCTURES, LabelSpaceError, load_label_space


def test_label_space_has_167_structures_in_nine_groups_with_contiguous_ids():
    space = load_label_space()
    assert len(space.structures) == N_STRUCTURES
    assert space.groups == GROUP_IDS
    for group in space.groups:
        ids = sorted(s.label_id for s in space.group(group))
        assert ids == list(range(1, len(ids) + 1))


def test_left_and_right_are_modifier_codes_not_separate_concepts():
    space = load_label_space()
    left, right = space.by_name("kidney_left"), space.by_name("kidney_right")
    assert left.type_code == right.type_code == "64033007"  # SNOMED-CT: Kidney
    assert (left.modifier_code, right.modifier_code) == ("7771000", "24028007")  # Left, Right


def test_group_label_map_lists_the_group_structures_by_in_group_id():
    mapping = load_label_space().group_label_map(551)
    assert mapping["spleen"] == 1 and mapping["liver"] == 5 and len(mapping) == 17


def test_unknown_structure_name_raises_with_the_name():
    with pytest.raises(KeyError, match="no_such_organ"):
        load_label_space().by_name("no_such_organ")


def test_table_with_gap_in_group_ids_is_rejected(tmp_path):
    from cadsflow.paths import STRUCTURES_TSV

    lines = STRUCTURES_TSV.read_text().splitlines()
    broken = [lines[0]] + [l for l in lines[1:] if not l.startswith("551\t2\t")]
    path = tmp_path / "structures.tsv"
    path.write_text("\n".join(broken) + "\n")
    with pytest.raises(LabelSpaceError, match=str(path)):
        load_label_space(path)
