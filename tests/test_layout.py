"""cadsflow.layout: a job's folder of maps beside its report, and one index over many job folders."""

from __future__ import annotations

import pytest

from cadsflow.layout import MapIndex, job_folder, map_path


def test_job_folder_is_the_report_path_without_its_tsv_suffix():
    assert str(job_folder("results/pseudolabels/551/shard_3.tsv")) == "results/pseudolabels/551/shard_3"


def test_job_folder_refuses_a_report_that_is_not_a_tsv():
    with pytest.raises(ValueError, match=r"shard_3\.csv: a job report is a \.tsv file"):
        job_folder("results/pseudolabels/551/shard_3.csv")


def test_index_finds_each_volume_in_its_own_folder_and_ignores_temporaries_and_other_files(tmp_path):
    a, b = tmp_path / "shard_0", tmp_path / "shard_1"
    a.mkdir()
    b.mkdir()
    for folder, vid in ((a, "v1"), (a, "v2"), (b, "v3")):
        map_path(folder, vid).write_bytes(b"x")
    (a / ".v4.tmpabc.nii.gz").write_bytes(b"partial")  # an interrupted atomic write
    (b / "preview.png").write_bytes(b"png")
    index = MapIndex([a, b, tmp_path / "shard_9"])  # shard_9: never created (all its volumes quarantined)
    assert index.ids() == ["v1", "v2", "v3"]
    assert index.path("v3") == b / "v3.nii.gz"
    assert index.get("v4") is None and "v4" not in index and len(index) == 3


def test_index_refuses_a_volume_present_in_two_folders_naming_both(tmp_path):
    for name in ("shard_0", "shard_1"):
        (tmp_path / name).mkdir()
        map_path(tmp_path / name, "v1").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"volume v1 has a map in two job folders: .*shard_0/v1\.nii\.gz and .*shard_1"):
        MapIndex([tmp_path / "shard_0", tmp_path / "shard_1"])


def test_a_missing_map_names_the_volume_and_the_folders_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no map of volume v7 in .*shard_0"):
        MapIndex([tmp_path / "shard_0"]).path("v7")


def test_a_file_given_as_a_folder_is_named(tmp_path):
    (tmp_path / "shard_0").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"shard_0: expected a folder of per-volume maps"):
        MapIndex([tmp_path / "shard_0"])


def test_index_of_takes_one_folder_several_or_an_index_and_keeps_none(tmp_path):
    a, b = tmp_path / "shard_0", tmp_path / "shard_1"
    for folder, vid in ((a, "v1"), (b, "v2")):
        folder.mkdir()
        map_path(folder, vid).write_bytes(b"x")
    assert MapIndex.of(None) is None  # no maps given (a group without brain gating)
    assert MapIndex.of(a).ids() == MapIndex.of(str(a)).ids() == ["v1"]
    several = MapIndex.of(p for p in (a, b))  # any iterable of folders, listed once each
    assert several.ids() == ["v1", "v2"] and several.folders == [a, b]
    assert MapIndex.of(several) is several  # an index already built is not listed again
    assert len(MapIndex.of([])) == 0  # no folders: an empty index, not "no maps given"
