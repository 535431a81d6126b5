"""The sheet of new CTs that the predict_batch rule segments: TSV with columns volume_id and image.

`image` is a NIfTI file or a DICOM series folder, relative to the sheet's folder unless absolute. Ids follow the
factory's volume-id rule (cadsflow.sheet.check_volume_id); an error names the sheet, the line and the problem.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cadsflow.sheet import SheetError, check_volume_id

COLUMNS = ("volume_id", "image")


def read_predict_sheet(path: str | Path) -> dict[str, str]:
    """volume_id -> image path (absolute), in the sheet's order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SheetError(f"{path}: cannot read the predict sheet ({exc})") from None
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows or [c.strip() for c in rows[0][:2]] != list(COLUMNS):
        raise SheetError(f"{path}:1: the header must start with the columns {list(COLUMNS)} (tab-separated)")
    volumes: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}: "
        if len(row) < 2 or not row[1].strip():
            raise SheetError(f"{where}expected a volume_id and an image")
        volume_id = check_volume_id(row[0].strip(), where)
        if volume_id in volumes:
            raise SheetError(f"{where}volume id {volume_id!r} appears twice")
        image = Path(row[1].strip())
        volumes[volume_id] = str(image if image.is_absolute() else (path.parent / image).resolve())
    return volumes


def predict_batches(volumes: dict[str, str], per_batch: int) -> dict[str, list[str]]:
    """Batch name (predict.0000, ...) -> its volume ids, consecutive chunks of the sorted ids."""
    ids = sorted(volumes)
    return {f"predict.{k // per_batch:04d}": ids[k:k + per_batch] for k in range(0, len(ids), per_batch)}
