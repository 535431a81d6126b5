"""cadsflow.textio: one reader per text format, with errors that name the file, the line and the problem."""

from __future__ import annotations

import pytest

from cadsflow.textio import read_yaml_mapping, tsv_rows


class ConfigError(ValueError):
    pass


def test_yaml_mapping_is_returned_and_an_empty_file_is_an_empty_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("groups:\n  551: {epochs: 3}\n")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "a.yaml", "the table") == {"groups": {551: {"epochs": 3}}}
    assert read_yaml_mapping(tmp_path / "empty.yaml", "the table") == {}


@pytest.mark.parametrize("text, message", [
    (None, r"missing\.yaml: the assembly config not found"),
    ("a: [1, 2\n", r"bad\.yaml: the assembly config is not valid YAML: .*line 2"),
    ("- 1\n- 2\n", r"bad\.yaml: the assembly config must be a mapping at the top level, found list"),
    (b"\xff\xfe\x00bad", r"bad\.yaml: cannot read the assembly config"),
])
def test_yaml_errors_name_the_file_and_raise_the_callers_exception(tmp_path, text, message):
    path = tmp_path / ("missing.yaml" if text is None else "bad.yaml")
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_yaml_mapping(path, "the assembly config", ConfigError)


def test_tsv_rows_give_physical_line_numbers_and_accept_a_bom_and_crlf(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes("\ufeffname\tvalue\r\nspleen\t1\r\nliver\t2\r\n".encode("utf-8"))
    assert list(tsv_rows(path, ("name", "value"), "the table")) == [
        (2, {"name": "spleen", "value": "1"}), (3, {"name": "liver", "value": "2"})]


def test_tsv_without_a_required_column_names_the_file_the_columns_and_the_header(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("name\tvolume\nspleen\t1\n")
    with pytest.raises(ConfigError, match=r"t\.tsv: the share table lacks column\(s\) gt_share, flavor \(header: name, volume\)"):
        list(tsv_rows(path, ("name", "gt_share", "flavor"), "the share table", ConfigError))


def test_a_missing_tsv_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.tsv: the share table not found"):
        list(tsv_rows(tmp_path / "nope.tsv", ("name",), "the share table", ConfigError))
