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


def test_extra_label_files_named_in_the_sheet_are_standardized_by_the_rule_or_quarantine_their_volume(tmp_path):
    """Registry with an `oar` label set -> sheet with a label_oar column -> the standardize rule: a good case gets
    label_oar.nii.gz, a case whose oar file holds a value the set does not know gets a quarantine line naming it."""
    import numpy as np
    import yaml

    from cadsflow.sheet import write_sheet
    from cadsflow.sources import discover_volumes, load_registry

    data, affine = tmp_path / "data", spacing_affine((1.5, 1.5, 1.5))
    oar = np.zeros((20, 18, 16), np.uint8)
    oar[4:8, 4:8, 4:8] = 8
    for case, oar_value in (("c1", 8), ("c2", 7)):
        write_nifti(data / "img" / f"{case}.nii.gz", ct_array(seed=1), affine)
        write_nifti(data / "lab" / f"{case}.nii.gz", np.zeros((20, 18, 16), np.uint8), affine)
        write_nifti(data / "oar" / f"{case}.nii.gz", np.where(oar == 8, oar_value, 0).astype(np.uint8), affine)
    registry = data / "registry.yaml"
    registry.write_text(yaml.safe_dump({"sources": {"vgc": {
        "images": "img/{case}.nii.gz", "labels": "lab/{case}.nii.gz", "label_values": {10: "sternum"},
        "extra_label_sets": {"oar": {"labels": "oar/{case}.nii.gz", "label_values": {8: "heart"}}}}}}))  # fmt: skip
    sheet = tmp_path / "volumes.tsv"
    write_sheet(discover_volumes(load_registry(registry)), sheet)
    config = write_config(tmp_path, sheet=str(sheet), registry=str(registry), demo={"enabled": False, "directory": "x"})
    snakemake(tmp_path, "results/quarantine/quarantine.tsv", config=config)
    lines = (tmp_path / "results/quarantine/quarantine.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in lines] == [["vgc_c2", str(data / "oar" / "c2.nii.gz")]]
    assert lines[0].split("\t")[2].startswith("extra label set 'oar': label values [7]")
    std = tmp_path / "results/standardized/vgc.0000/vgc_c1"
    assert np.array_equal(np.asanyarray(nib.load(std / "label_oar.nii.gz").dataobj), oar)
