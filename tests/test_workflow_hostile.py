"""The hostile-input corpus through the real Snakefile (issue 17, item 6; slow: one DAG run to the quarantine table).

A hand-written sheet, saved the way spreadsheet programs do (UTF-8 BOM, CRLF line ends), lists every hostile volume
of tests/test_hostile_input.py next to two good phantom volumes, all in one source and so in one standardize batch.
The run must finish: one quarantine line per hostile volume with the reason that names its problem, the good
volumes standardized, and a rerun that leaves the good outputs' bytes and mtimes alone. A sheet row with too few
fields stops the run before any job, naming the sheet's file and line.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cadsflow.phantom import make_grid, make_phantom
from helpers import write_nifti
from test_hostile_input import permissions_stop_reads, write_hostile_corpus
from workflow_runner import snakemake, write_config

pytestmark = pytest.mark.slow

SOURCE = "mine"
BATCH = f"{SOURCE}.0000"  # every volume of one source in one batch (volumes_per_batch 100)
GOOD_SPACING_MM = (3.0, 3.0, 3.0)  # coarse phantoms keep the run short; standardized to 1.5 mm
HEADER = ("volume_id", "source", "image", "label", "split")


def _good_phantoms(data: Path) -> list[tuple[str, str, str, str]]:
    """Two phantom abdomens, one with a liver label map (train_gt), one without: (id, image, label, split)."""
    rows = []
    for k, seed in enumerate((11, 12)):
        grid = make_grid("abdomen", spacing=GOOD_SPACING_MM)
        image, masks = make_phantom(grid, seed)
        write_nifti(data / f"good{k}.nii.gz", image.astype(np.int16), grid.affine)
        label = ""
        if k == 0:
            write_nifti(data / "good0_label.nii.gz", masks["liver"].astype(np.uint8), grid.affine)
            label = "data/good0_label.nii.gz"
        rows.append((f"good{k}", f"data/good{k}.nii.gz", label, "train_gt" if label else "train_unlabelled"))
    return rows


def _windows_sheet(path: Path, rows) -> None:
    text = "\r\n".join("\t".join(r) for r in [HEADER, *rows]) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())


def _good_outputs(workdir: Path) -> dict[str, tuple[bytes, int]]:
    files = sorted((workdir / "results/standardized" / BATCH).glob("good*/*"))
    assert files, "no standardized outputs for the good volumes"
    return {str(f.relative_to(workdir)): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def test_hostile_corpus_gives_one_quarantine_line_each_and_the_good_volumes_survive_a_rerun_untouched(tmp_path):
    data = tmp_path / "data"
    cases = write_hostile_corpus(data, unreadable=permissions_stop_reads(tmp_path))
    good = _good_phantoms(data)
    hostile = [
        (c.name, f"data/{c.image}", f"data/{c.label}" if c.label else "", "train_gt" if c.label else "train_unlabelled")
        for c in cases
    ]
    rows = [(vid, SOURCE, image, label, split) for vid, image, label, split in [*good, *hostile]]
    sheet = tmp_path / "volumes.tsv"
    _windows_sheet(sheet, rows)
    config = write_config(tmp_path, sheet=str(sheet), registry="", demo={"enabled": False, "directory": "x"})
    target = "results/quarantine/quarantine.tsv"
    snakemake(tmp_path, target, "--until", "quarantine_table", config=config)

    lines = (tmp_path / target).read_text().splitlines()
    assert lines[0] == "volume_id\tfile\treason"
    root = tmp_path.resolve() / "data"  # the sheet resolves relative paths against its own folder
    assert sorted(lines[1:]) == sorted(f"{c.name}\t{root / c.file}\t{c.expected_reason(root)}" for c in cases)
    status_rows = [line.split("\t") for line in (tmp_path / "results/quarantine/status.tsv").read_text().splitlines()]
    status = {row[0]: row[3] for row in status_rows[1:]}  # volume_id, source, split, status
    assert status == {"good0": "ok", "good1": "ok", **{c.name: "quarantined" for c in cases}}  # none "failed"
    for vid in ("good0", "good1"):
        img = nib.load(tmp_path / "results/standardized" / BATCH / vid / "image.nii.gz")
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 1.5))
    label = np.asarray(nib.load(tmp_path / "results/standardized" / BATCH / "good0" / "label.nii.gz").dataobj)
    assert set(np.unique(label).tolist()) == {0, 1}

    before = _good_outputs(tmp_path)
    table_before = (tmp_path / target).stat().st_mtime_ns
    snakemake(tmp_path, target, "--until", "quarantine_table", config=config)
    assert _good_outputs(tmp_path) == before
    assert (tmp_path / target).stat().st_mtime_ns == table_before


def test_sheet_row_with_too_few_fields_stops_the_run_naming_the_file_and_line(tmp_path):
    sheet = tmp_path / "volumes.tsv"
    _windows_sheet(sheet, [("a", SOURCE, "a.nii.gz", "", "train_unlabelled"), ("b", SOURCE, "b.nii.gz", "test")])
    config = write_config(tmp_path, sheet=str(sheet), registry="", demo={"enabled": False, "directory": "x"})
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert (
        f"{sheet}:3: row has 4 tab-separated fields, the header has 5 (volume_id, source, image, label, split)"
        in proc.stderr + proc.stdout
    )
    assert not (tmp_path / "results").exists()
