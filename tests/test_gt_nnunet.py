"""Group training sets as nnU-Net v2 raw datasets that stock nnU-Net verifies and plans."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cadsflow.gt.mapping import ignore_label
from cadsflow.gt.nnunet_dataset import CandidateVolume, DatasetError, write_group_dataset
from cadsflow.gt.phantoms import body_phantom, demo_registry, sparsify, write_standardized
from cadsflow.gt.training import GroupTraining
from cadsflow.gt.volume import prepare_volume_gt
from cadsflow.labels import load_label_space
from cadsflow.sources import load_registry

SHAPE = (32, 32, 32)
NNUNET_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def space():
    return load_label_space()


@pytest.fixture(scope="module")
def raw(tmp_path_factory, space):
    """Three demo_totalseg-like and three demo_saros-like cases, through the gt stage into two datasets."""
    root = tmp_path_factory.mktemp("gt")
    demo = load_registry(demo_registry(root / "registry.yaml"))
    ts, saros = demo["demo_totalseg"], demo["demo_saros"]
    value = {spec.targets[0]: v for v, spec in ts.label_values.items()}
    rng = np.random.default_rng(0)
    candidates = {551: [], 559: []}
    for i in range(3):
        image = rng.integers(-1000, 400, size=SHAPE).astype(np.int16)
        labels = np.zeros(SHAPE, np.uint8)
        labels[4 + i : 14, 4:20, 6:24] = value["liver"]
        labels[18:26, 6:14, 6:14 + i] = value["spleen"]
        vid = f"demo_totalseg_case{i:03d}"
        write_standardized(root / "std" / vid, vid, ts.name, image, {"label.nii.gz": labels})
        prepare_volume_gt(vid, ts, root / "std" / vid, root / "gt" / vid, space=space)
        candidates[551].append(CandidateVolume(vid, ts.name, str(root / "std" / vid), str(root / "gt" / vid)))
        vid = f"demo_saros_case{i:03d}"
        sparse = sparsify(body_phantom(SHAPE), 5, 255, offset=1 + i)  # slice 0 stays unannotated -> ignore
        write_standardized(root / "std" / vid, vid, saros.name, image, {"label.nii.gz": sparse})
        prepare_volume_gt(vid, saros, root / "std" / vid, root / "gt" / vid, space=space)
        candidates[559].append(CandidateVolume(vid, saros.name, str(root / "std" / vid), str(root / "gt" / vid)))
    out = root / "nnUNet_raw"
    specs = {
        551: write_group_dataset(GroupTraining(551, "Organs", "source", ("demo_totalseg",)), candidates[551],
                                 out / "Dataset551_Organs", space),
        559: write_group_dataset(GroupTraining(559, "BodyRegions", "source", ("demo_saros",)), candidates[559],
                                 out / "Dataset559_BodyRegions", space),
    }
    return root, specs


def test_dataset_json_lists_every_group_structure_even_those_no_source_labels(raw, space):
    _, specs = raw
    labels = specs[551]["labels"]
    structures = {k: v for k, v in labels.items() if k != "background"}
    assert labels["background"] == 0 and structures == space.group_label_map(551)
    assert specs[551]["channel_names"] == {"0": "CT"} and specs[551]["numTraining"] == 3
    assert specs[551]["file_ending"] == ".nii.gz"


def test_ignore_label_is_declared_highest_only_where_cases_have_unknown_voxels(raw, space):
    _, specs = raw
    assert "ignore" not in specs[551]["labels"]
    assert specs[559]["labels"]["ignore"] == ignore_label(559, space) == max(specs[559]["labels"].values())


def test_dataset_folder_has_the_nnunet_layout_and_a_case_table(raw):
    root, _ = raw
    folder = root / "nnUNet_raw" / "Dataset559_BodyRegions"
    cases = [f"demo_saros_case{i:03d}" for i in range(3)]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in cases]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    first = (folder / "cads_cases.tsv").read_text().splitlines()[1]
    assert first.startswith("demo_saros_case000\tdemo_saros_case000\tdemo_saros\t")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # ~40-90 s: nnU-Net spawns worker processes that import torch
def test_stock_nnunet_verifies_integrity_and_plans_both_datasets(raw, tmp_path):
    root, _ = raw
    env = {**os.environ, "nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "results")}
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(NNUNET_BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=600)
    fingerprint = run("nnUNetv2_extract_fingerprint", "-d", "551", "559", "-np", "1", "--verify_dataset_integrity")
    assert fingerprint.returncode == 0, fingerprint.stdout[-3000:] + fingerprint.stderr[-3000:]
    plan = run("nnUNetv2_plan_experiment", "-d", "551", "559")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    for dataset in ("Dataset551_Organs", "Dataset559_BodyRegions"):
        plans = json.loads((tmp_path / "pre" / dataset / "nnUNetPlans.json").read_text())
        assert "3d_fullres" in plans["configurations"], dataset


def test_a_group_without_any_mapped_case_is_an_error_naming_the_dataset(raw, tmp_path, space):
    root, _ = raw
    vid = "demo_totalseg_case000"
    only_organs = [CandidateVolume(vid, "demo_totalseg", str(root / "std" / vid), str(root / "gt" / vid))]
    with pytest.raises(DatasetError, match="Dataset558_HeadNeck.*no.*group_558"):
        write_group_dataset(GroupTraining(558, "HeadNeck", "source", ("demo_totalseg",)), only_organs,
                            tmp_path / "Dataset558_HeadNeck", space)
