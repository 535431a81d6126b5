import pytest

from cadsflow.sheet import SheetError, check_volume_id, read_sheet
from cadsflow.sources import RegistryError, discover_volumes, load_registry
from helpers import ct_array, write_nifti

HEADER = "volume_id\tsource\timage\tlabel\tsplit\n"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "x;rm -rf", "with space", "", ".hidden", "a$b", "tab\tid", "-x"])
def test_volume_ids_with_separators_whitespace_or_shell_metacharacters_are_rejected(bad):
    with pytest.raises(SheetError, match="invalid volume id"):
        check_volume_id(bad)


def test_plain_volume_ids_pass():
    assert check_volume_id("s0011_CT-2.v1") == "s0011_CT-2.v1"


def test_sheet_with_duplicate_id_names_file_line_and_id(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(HEADER + "a\tsrc\ta.nii.gz\t\ttrain_unlabelled\na\tsrc\tb.nii.gz\t\ttrain_unlabelled\n")
    with pytest.raises(SheetError, match=r"v\.tsv:3: duplicate volume id 'a'"):
        read_sheet(sheet)


def test_sheet_rejects_traversal_id_and_names_the_line(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(HEADER + "../x\tsrc\ta.nii.gz\t\ttrain_unlabelled\n")
    with pytest.raises(SheetError, match=r"v\.tsv:2: invalid volume id '\.\./x'"):
        read_sheet(sheet)


def test_sheet_rejects_semicolon_id(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(HEADER + "a;b\tsrc\ta.nii.gz\t\ttrain_unlabelled\n")
    with pytest.raises(SheetError, match="invalid volume id 'a;b'"):
        read_sheet(sheet)


def test_sheet_resolves_relative_paths_against_its_folder_and_checks_splits(tmp_path):
    sheet = tmp_path / "sub" / "v.tsv"
    sheet.parent.mkdir()
    sheet.write_text(HEADER + "a\tsrc\timg/a.nii.gz\tlab/a.nii.gz\ttrain_gt\n")
    vol = read_sheet(sheet)["a"]
    assert vol.image == str(tmp_path / "sub" / "img" / "a.nii.gz") and vol.has_label
    sheet.write_text(HEADER + "a\tsrc\timg/a.nii.gz\t\ttraining\n")
    with pytest.raises(SheetError, match="split 'training'"):
        read_sheet(sheet)


def test_train_gt_row_without_label_is_rejected(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(HEADER + "a\tsrc\ta.nii.gz\t\ttrain_gt\n")
    with pytest.raises(SheetError, match="needs a label path"):
        read_sheet(sheet)


def test_sheet_with_unregistered_source_is_rejected(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(HEADER + "a\tmystery\ta.nii.gz\t\ttrain_unlabelled\n")
    with pytest.raises(SheetError, match="source 'mystery' is not in the registry"):
        read_sheet(sheet, known_sources={"kits"})


def _registry(tmp_path, body):
    path = tmp_path / "registry.yaml"
    path.write_text(body)
    return path


def test_registry_discovers_cases_assigns_splits_and_maps_unions(tmp_path):
    for case in ("c1", "c2", "c3"):
        write_nifti(tmp_path / "img" / f"{case}.nii.gz", ct_array())
    write_nifti(tmp_path / "lab" / "c1.nii.gz", ct_array() * 0)
    write_nifti(tmp_path / "lab" / "c2.nii.gz", ct_array() * 0)
    path = _registry(
        tmp_path,
        "sources:\n  kits:\n    images: img/{case}.nii.gz\n    labels: lab/{case}.nii.gz\n"
        "    label_values:\n      1: {union: [kidney_left, kidney_right]}\n      2: {lesion_of: [kidney_left]}\n"
        "      3: liver\n    split: {test: [c2]}\n",
    )
    sources = load_registry(path)
    kits = sources["kits"]
    assert kits.label_values[1].kind == "union" and kits.label_values[1].targets == ("kidney_left", "kidney_right")
    assert kits.label_values[2].kind == "lesion_of" and kits.known_values() == {0, 1, 2, 3}
    splits = {v.volume_id: v.split for v in discover_volumes(sources)}
    assert splits == {"kits_c1": "train_gt", "kits_c2": "test", "kits_c3": "train_unlabelled"}


def test_registry_mapping_to_unknown_structure_names_the_source_and_value(tmp_path):
    path = _registry(tmp_path, "sources:\n  s:\n    images: i/{case}.nii.gz\n    label_values:\n      4: livr\n")
    with pytest.raises(RegistryError, match=r"source 's': label value 4: 'livr' is not a unified structure"):
        load_registry(path)


def test_todo_mapping_refuses_to_be_used(tmp_path):
    path = _registry(tmp_path, "sources:\n  s:\n    images: i/{case}.nii.gz\n    mapping_status: todo\n")
    with pytest.raises(RegistryError, match="refusing to guess"):
        load_registry(path)["s"].require_mapping()


def _volumes(ids_by_source):
    from cadsflow.sheet import Volume

    return {
        vid: Volume(vid, src, f"{vid}.nii.gz", "", "train_unlabelled")
        for src, ids in ids_by_source.items()
        for vid in ids
    }


def test_batches_hold_at_most_n_volumes_of_one_source_and_cover_every_volume_once():
    from cadsflow.sheet import make_batches

    vols = _volumes({"a": [f"a_{i}" for i in range(7)], "b": ["b_0", "b_1"]})
    batches = make_batches(vols, 3)
    assert batches == {
        "a.0000": ["a_0", "a_1", "a_2"], "a.0001": ["a_3", "a_4", "a_5"], "a.0002": ["a_6"], "b.0000": ["b_0", "b_1"],
    }


def test_adding_a_source_leaves_other_sources_batches_unchanged():
    from cadsflow.sheet import make_batches

    before = make_batches(_volumes({"a": [f"a_{i}" for i in range(5)]}), 2)
    after = make_batches(_volumes({"a": [f"a_{i}" for i in range(5)], "0new": ["0new_x"]}), 2)
    assert all(after[b] == members for b, members in before.items())
