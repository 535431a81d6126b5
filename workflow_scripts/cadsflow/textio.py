"""Reading the factory's YAML configs and TSV tables, with errors that name the file (and the line) and the problem.

Every stage reads small text files written by people (configs, mapping tables) or by other jobs (reports). One
reader per format keeps the checks the same everywhere: a missing file, text that is not YAML, a top level that is
not a mapping, a table without the columns its reader needs. Each caller passes its own exception class, so a stage
keeps raising the error its callers catch.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception] = ValueError) -> dict:
    """The top-level mapping of a YAML file (an empty file is an empty mapping).

    `what` names the file's role in messages ("the assembly config"); `error` is the exception raised."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: {what} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: {what} must be a mapping at the top level, found {type(data).__name__}")
    return data


def tsv_rows(path: str | Path, required: Iterable[str], what: str, error: type[Exception] = ValueError
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a tab-separated table with a header, after checking that the header has every
    `required` column. A BOM and CRLF line ends are accepted (tables edited in spreadsheets have both)."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc})") from None
    with handle:
        reader = csv.DictReader(handle, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise error(f"{path}: {what} lacks column(s) {', '.join(missing)} (header: {', '.join(header) or 'none'})")
        for row in reader:
            yield reader.line_num, row
