"""The volume sheet: one row per CT volume, built from a source registry or written by hand.

Columns: volume_id, source, image, label, split, body_region. `label` is empty for unlabelled volumes.
Optional columns `label_<set>` (e.g. `label_oar`) name a case's further label files, one per extra label set of its
source (registry `extra_label_sets`), empty where a case has none; a sheet without them reads as before. Like
`label`, a named file that does not exist is not a sheet error: the standardize stage quarantines the volume.
The Snakefile reads the sheet at parse time, so reading it must stay cheap at 22,022 rows (csv, no pandas).
Relative image/label paths in a sheet are resolved against the sheet's own folder.

Sheets saved by spreadsheet programs are accepted as they come: a UTF-8 byte-order mark and CRLF (Windows) line
ends are read like plain LF text, and blank lines are skipped. What cannot be read unambiguously stops the run
with the sheet's file and line: text that is not UTF-8, and a row whose number of tab-separated fields differs
from the header's (a missing tab shifts every later column; trailing empty fields are tolerated).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

# One id pattern for the whole factory: ids become file names and wildcards, so no separators,
# whitespace or shell metacharacters; a leading alphanumeric rules out ".", ".." and "-x".
VOLUME_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_VOLUME_ID_RE = re.compile(VOLUME_ID_PATTERN)
SPLITS = ("train_gt", "train_unlabelled", "test")
COLUMNS = ("volume_id", "source", "image", "label", "split", "body_region")
REQUIRED = ("volume_id", "source", "image", "split")
EXTRA_LABEL_PREFIX = "label_"  # column label_<set>: the case's file of extra label set <set>
LABEL_SET_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"  # a set name is an identifier: it becomes label_<set>.nii.gz
_LABEL_SET_RE = re.compile(LABEL_SET_PATTERN)
MAIN_LABEL_SET = "main"  # the name of the `label` file's set (as in cadsflow.gt.mapping); no extra set may take it


class SheetError(ValueError):
    """The volume sheet is malformed; the message names the file, the row and the problem."""


@dataclass(frozen=True)
class Volume:
    volume_id: str
    source: str
    image: str
    label: str  # '' when the volume carries no labels
    split: str
    body_region: str = ""
    # extra label set name -> file; left out of the hash so a Volume stays hashable (equality still compares it)
    extra_labels: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def has_label(self) -> bool:
        return bool(self.label)

    def __repr__(self) -> str:
        """The dataclass repr, with extra_labels only when there are some: Snakemake compares params by repr, so a
        volume without extra labels keeps the repr it had before the field existed (no spurious reruns)."""
        shown = [f.name for f in fields(self) if f.name != "extra_labels" or self.extra_labels]
        return f"Volume({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"


def check_volume_id(volume_id: str, where: str = "") -> str:
    if not _VOLUME_ID_RE.fullmatch(volume_id or ""):
        raise SheetError(
            f"{where}invalid volume id {volume_id!r}: ids must match {VOLUME_ID_PATTERN} "
            "(letters, digits, '.', '_', '-'; no path separators, whitespace or shell metacharacters)"
        )
    return volume_id


def read_sheet(path: str | Path, known_sources: set[str] | None = None) -> dict[str, Volume]:
    """Read and validate a sheet; return volumes by id in sheet order."""
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: volume sheet not found")
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t")
    header = [name.strip() for name in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise SheetError(f"{path}: missing columns {missing}; a sheet needs at least {list(REQUIRED)}")
    extra_sets = _extra_label_sets(header, path)
    base = path.resolve().parent
    volumes: dict[str, Volume] = {}
    for fields in reader:
        where = f"{path}:{reader.line_num}: "
        if not any(f.strip() for f in fields):
            continue  # blank line
        volume = _parse_row(_row_dict(fields, header, where), base, where, known_sources, extra_sets)
        if volume.volume_id in volumes:
            raise SheetError(f"{where}duplicate volume id {volume.volume_id!r}")
        volumes[volume.volume_id] = volume
    if not volumes:
        raise SheetError(f"{path}: the sheet lists no volumes")
    return volumes


def _extra_label_sets(header: list[str], path: Path) -> tuple[str, ...]:
    """The extra label sets the header has a `label_<set>` column for; a set name must be an identifier."""
    sets = [name[len(EXTRA_LABEL_PREFIX):] for name in header if name.startswith(EXTRA_LABEL_PREFIX)]
    bad = [s for s in sets if not _LABEL_SET_RE.fullmatch(s) or s == MAIN_LABEL_SET]
    if bad:
        raise SheetError(
            f"{path}: columns {[EXTRA_LABEL_PREFIX + s for s in bad]} do not name a label set: a column "
            f"'{EXTRA_LABEL_PREFIX}<set>' needs a set name matching {LABEL_SET_PATTERN}, other than "
            f"'{MAIN_LABEL_SET}' (the `label` column's set)"
        )
    duplicates = sorted({s for s in sets if sets.count(s) > 1})
    if duplicates:
        raise SheetError(f"{path}: columns {[EXTRA_LABEL_PREFIX + s for s in duplicates]} appear more than once")
    return tuple(sets)


def _read_text(path: Path) -> str:
    """The sheet as text: UTF-8 with or without a byte-order mark; anything else names the line it breaks on."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SheetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the sheet as UTF-8"
        ) from None


def _row_dict(fields: list[str], header: list[str], where: str) -> dict[str, str]:
    """Fields by column name; a row must have the header's number of fields (trailing empty extras aside)."""
    while len(fields) > len(header) and not fields[-1].strip():
        fields = fields[:-1]
    if len(fields) != len(header):
        raise SheetError(
            f"{where}row has {len(fields)} tab-separated fields, the header has {len(header)} "
            f"({', '.join(header)}); check for a missing or extra tab"
        )
    return dict(zip(header, fields))


def _parse_row(
    row: dict, base: Path, where: str, known_sources: set[str] | None, extra_sets: tuple[str, ...] = ()
) -> Volume:
    volume_id = check_volume_id((row.get("volume_id") or "").strip(), where)
    split = (row.get("split") or "").strip()
    if split not in SPLITS:
        raise SheetError(f"{where}volume {volume_id}: split {split!r} is not one of {SPLITS}")
    source = (row.get("source") or "").strip()
    if not source:
        raise SheetError(f"{where}volume {volume_id}: empty source")
    if known_sources is not None and source not in known_sources:
        raise SheetError(f"{where}volume {volume_id}: source {source!r} is not in the registry")
    image = (row.get("image") or "").strip()
    if not image:
        raise SheetError(f"{where}volume {volume_id}: empty image path")
    label = (row.get("label") or "").strip()
    if split == "train_gt" and not label:
        raise SheetError(f"{where}volume {volume_id}: split train_gt needs a label path")
    return Volume(
        volume_id=volume_id,
        source=source,
        image=_resolve(base, image),
        label=_resolve(base, label) if label else "",
        split=split,
        body_region=(row.get("body_region") or "").strip(),
        extra_labels={
            name: _resolve(base, value)
            for name in extra_sets
            if (value := (row.get(EXTRA_LABEL_PREFIX + name) or "").strip())
        },
    )


def _resolve(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else (base / p))


def write_sheet(volumes: list[Volume] | tuple[Volume, ...], path: str | Path) -> None:
    """Write the sheet atomically; one `label_<set>` column per extra label set any volume carries (sorted)."""
    from cadsflow.atomic import atomic_path

    extra_sets = sorted({name for v in volumes for name in v.extra_labels})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow([*COLUMNS, *(EXTRA_LABEL_PREFIX + name for name in extra_sets)])
        for v in volumes:
            writer.writerow([v.volume_id, v.source, v.image, v.label, v.split, v.body_region,
                             *(v.extra_labels.get(name, "") for name in extra_sets)])


def make_batches(volumes: dict[str, Volume], per_batch: int) -> dict[str, list[str]]:
    """Split volumes into batches of at most `per_batch`, per source, in sorted id order.

    Batches are the unit of per-volume work (one job standardizes, pseudo-labels or assembles a batch), which
    keeps the DAG at a few hundred jobs per stage for 22,022 volumes. Batching within each source keeps
    membership stable when another source is added; ids are '<source>.<k>' (k zero-padded).
    """
    if per_batch < 1:
        raise SheetError(f"volumes per batch must be >= 1, not {per_batch}")
    by_source: dict[str, list[str]] = {}
    for vid, vol in volumes.items():
        by_source.setdefault(vol.source, []).append(vid)
    batches: dict[str, list[str]] = {}
    for source in sorted(by_source):
        ids = sorted(by_source[source])
        for k in range(0, len(ids), per_batch):
            batches[f"{source}.{k // per_batch:04d}"] = ids[k : k + per_batch]
    return batches
