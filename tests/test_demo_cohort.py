import nibabel as nib
import numpy as np
import yaml

from cadsflow.cli import sheet_main
from cadsflow.demo import SPARSE_UNANNOTATED, build_demo_cohort
from cadsflow.sheet import read_sheet
from cadsflow.sources import load_registry

SPEC = {
    "seed": 11,
    "sources": {
        "tiny_gt": {
            "body_region": "abdomen", "licence": "CC0", "regions": ["abdomen", "abdomen"],
            "spacing": [3.0, 3.0, 4.0], "orientation": "LPS", "test_cases": ["case001"],
            "labels": ["liver", "spleen", {"union": ["kidney_left", "kidney_right"], "name": "kidneys"}],
        },
        "tiny_sparse": {
            "body_region": "torso", "licence": "CC0", "regions": ["abdomen"], "spacing": [3.0, 3.0, 3.0],
            "orientation": "RAS", "sparse_slices": 5, "labels": ["muscle"],
        },
        "tiny_unlabelled": {"regions": ["head"], "spacing": [3.0, 3.0, 3.0], "orientation": "RAS"},
    },
}


def _build(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    return build_demo_cohort(tmp_path / "cohort", spec)


def test_demo_cohort_has_partial_labels_unlabelled_volumes_and_other_orientations(tmp_path):
    volumes = read_sheet(_build(tmp_path))
    assert {v: vol.split for v, vol in volumes.items()} == {
        "tiny_gt_case000": "train_gt", "tiny_gt_case001": "test",
        "tiny_sparse_case000": "train_gt", "tiny_unlabelled_case000": "train_unlabelled",
    }
    lps = nib.load(volumes["tiny_gt_case000"].image)
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    registry = load_registry(tmp_path / "cohort" / "registry.yaml")
    assert registry["tiny_gt"].label_values[3].kind == "union"
    labels = np.asarray(nib.load(volumes["tiny_gt_case000"].label).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_sparse_source_is_annotated_on_every_fifth_axial_slice_only(tmp_path):
    volumes = read_sheet(_build(tmp_path))
    label = np.asarray(nib.load(volumes["tiny_sparse_case000"].label).dataobj)
    annotated = [k for k in range(label.shape[2]) if not (label[:, :, k] == SPARSE_UNANNOTATED).all()]
    assert annotated == list(range(0, label.shape[2], 5))


def test_demo_cohort_is_byte_identical_when_rebuilt(tmp_path):
    first = read_sheet(_build(tmp_path))
    a = np.asarray(nib.load(first["tiny_gt_case000"].image).dataobj).copy()
    second = read_sheet(_build(tmp_path))
    assert np.array_equal(a, np.asarray(nib.load(second["tiny_gt_case000"].image).dataobj))


def test_sheet_command_builds_the_sheet_from_a_registry(tmp_path, capsys):
    _build(tmp_path)
    out = tmp_path / "sheet.tsv"
    assert sheet_main([str(tmp_path / "cohort" / "registry.yaml"), "-o", str(out)]) == 0
    assert len(read_sheet(out)) == 4 and "4 volumes" in capsys.readouterr().out


def test_sheet_command_reports_a_bad_registry_with_its_file(tmp_path, capsys):
    bad = tmp_path / "registry.yaml"
    bad.write_text("sources:\n  s:\n    images: x/{case}.nii.gz\n    label_values: {1: not_an_organ}\n")
    assert sheet_main([str(bad), "-o", str(tmp_path / "s.tsv")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_planned_cohort_is_exactly_what_the_build_writes(tmp_path):
    """The DAG is planned before the cohort exists: its volumes and file list must equal the written ones."""
    from cadsflow.demo import planned_demo_cohort

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    sources, planned, files = planned_demo_cohort(tmp_path / "cohort", spec)
    assert not (tmp_path / "cohort").exists()  # planning writes nothing
    written = read_sheet(build_demo_cohort(tmp_path / "cohort", spec))
    assert {v.volume_id: v for v in planned} == written
    on_disk = {p for p in (tmp_path / "cohort").rglob("*") if p.is_file() and p.name != ".fingerprint"}
    assert set(files) == on_disk and len(files) == 2 + 4 + 3  # registry, sheet, 4 images, 3 label maps
    assert sorted(sources) == sorted(load_registry(tmp_path / "cohort" / "registry.yaml"))


def test_a_dry_run_on_a_fresh_directory_writes_nothing_but_snakemakes_own_folder(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    run = subprocess.run([snakemake, "-s", str(repo / "Snakefile"), "--directory", str(tmp_path), "-n", "--quiet",
                          "rules"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "demo_cohort" in run.stdout + run.stderr  # the cohort is a job of the DAG, not a parse-time side effect
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake"]
