"""The DAG keeps running when a volume is bad: one quarantine line, everything else standardized."""

import nibabel as nib

from helpers import ct_array, spacing_affine, write_nifti
from workflow_runner import snakemake, write_config


def test_bad_volume_gets_one_quarantine_line_and_the_rest_of_the_dag_runs_on(tmp_path):
    data = tmp_path / "data"
    write_nifti(data / "good1.nii.gz", ct_array(), spacing_affine((1.5, 1.5, 3.0)))
    write_nifti(data / "good2.nii.gz", ct_array(seed=1), spacing_affine((0.9, 0.9, 2.0)))
    raw = (data / "good1.nii.gz").read_bytes()
    (data / "broken.nii.gz").write_bytes(raw[: len(raw) // 3])
    sheet = tmp_path / "volumes.tsv"
    sheet.write_text(
        "volume_id\tsource\timage\tlabel\tsplit\n"
        "good1\tmine\tdata/good1.nii.gz\t\ttrain_unlabelled\n"
        "broken\tmine\tdata/broken.nii.gz\t\ttrain_unlabelled\n"
        "good2\tmine\tdata/good2.nii.gz\t\ttrain_unlabelled\n"
        "missing\tmine\tdata/missing.nii.gz\t\ttrain_unlabelled\n"
    )
    config = write_config(tmp_path, sheet=str(sheet), registry="", demo={"enabled": False, "directory": "x"})
    snakemake(tmp_path, "results/quarantine/quarantine.tsv", config=config)
    lines = (tmp_path / "results/quarantine/quarantine.tsv").read_text().splitlines()
    assert lines[0] == "volume_id\tfile\treason"
    reasons = dict((l.split("\t")[0], l.split("\t")[2]) for l in lines[1:])
    assert set(reasons) == {"broken", "missing"}
    assert "unreadable" in reasons["broken"] and "not found" in reasons["missing"]
    for good in ("good1", "good2"):
        img = nib.load(tmp_path / f"results/standardized/mine.0000/{good}/image.nii.gz")
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


def test_sheet_with_a_shell_metacharacter_id_stops_the_run_with_the_line(tmp_path):
    sheet = tmp_path / "volumes.tsv"
    sheet.write_text("volume_id\tsource\timage\tlabel\tsplit\nx;rm\tmine\ta.nii.gz\t\ttrain_unlabelled\n")
    config = write_config(tmp_path, sheet=str(sheet), registry="", demo={"enabled": False, "directory": "x"})
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "volumes.tsv:2: invalid volume id 'x;rm'" in proc.stderr + proc.stdout


def test_wrong_config_key_is_reported_by_schema_validation(tmp_path):
    config = write_config(tmp_path, standardise={"spacing_mm": 1.5})
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "standardise" in proc.stderr + proc.stdout
