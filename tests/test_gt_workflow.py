"""The gt stage's rules on the embedded demo cohort, run by Snakemake (end to end, minutes)."""

import json

import pytest
from workflow_runner import snakemake, write_config

pytestmark = pytest.mark.slow
DATASETS = ["Dataset551_Organs", "Dataset552_Vertebrae", "Dataset553_CardiacGI", "Dataset554_BonesMuscles",
            "Dataset555_Ribs", "Dataset556_OAR", "Dataset557_Brain", "Dataset558_HeadNeck", "Dataset559_BodyRegions"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The real workflow on the demo cohort, up to the gt batches and the group datasets (no training)."""
    work = tmp_path_factory.mktemp("gt_workflow")
    batches = [f"results/gt/demo_{s}.0000" for s in ("totalseg", "oar", "hanseg", "saros", "kits")]
    datasets = [f"results/specialists/nnUNet_raw/{name}/dataset.json" for name in DATASETS]
    snakemake(work, *batches, *datasets, config=write_config(work), timeout=1800)
    return work


def test_every_group_of_the_smoke_preset_gets_an_nnunet_dataset(workdir):
    raw = workdir / "results" / "specialists" / "nnUNet_raw"
    names = sorted(p.parent.name for p in raw.glob("Dataset55?_*/dataset.json"))
    assert names == DATASETS
    for path in raw.glob("Dataset55?_*/dataset.json"):
        spec = json.loads(path.read_text())
        assert spec["numTraining"] == len(list((path.parent / "labelsTr").glob("*.nii.gz"))) > 0, path


def _sheet_ids(workdir, source, labelled_only=False):
    """The volume ids of one demo source, from the sheet the workflow wrote (never from the outputs under test)."""
    from cadsflow.sheet import read_sheet

    volumes = read_sheet(workdir / "demo" / "volumes.tsv")
    ids = {v for v, vol in volumes.items() if vol.source == source and (vol.has_label or not labelled_only)}
    assert ids, f"the demo sheet has no {source} volumes"
    return ids


def test_demo_head_cts_get_registered_brain_labels_and_saros_slices_are_interpolated(workdir):
    records = {p.parent.name: json.loads(p.read_text()) for p in (workdir / "results" / "gt").glob("*/*/record.json")}
    hanseg, saros = _sheet_ids(workdir, "demo_hanseg"), _sheet_ids(workdir, "demo_saros", labelled_only=True)
    assert hanseg <= set(records) and saros <= set(records)  # every one has a record: the loops below are not empty
    assert {v for v in hanseg if 557 in records[v]["groups"]} == hanseg
    assert {v for v in saros if records[v]["sparse"]["interpolated_slices"] > 0} == saros


def test_kits_like_volumes_record_union_and_lesion_provenance_without_group_maps(workdir):
    folders = [p for p in (workdir / "results" / "gt").glob("demo_kits.*/*") if p.is_dir()]
    assert {p.name for p in folders} == _sheet_ids(workdir, "demo_kits", labelled_only=True)
    for folder in folders:
        rows = (folder / "provenance.tsv").read_text().splitlines()[1:]
        origins = {line.split("\t")[2] for line in rows}
        assert not list(folder.glob("group_*.nii.gz")) and origins == {"mapped_union", "lesion"}, folder
