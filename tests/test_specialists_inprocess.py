"""nnU-Net's planning in the job's own process, and the demo's nearest-neighbour label export.

The serial fingerprint and preprocessing must give exactly what nnU-Net's own pooled code gives (they only drop the
spawned workers), and the nearest export must put labels where nnU-Net's grid puts them.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import REPO, spacing_affine, write_nifti

from cadsflow.pseudolabel.infer import nearest_resize
from cadsflow.specialists.planning import PlanningError, check_nnunet_folders


def test_nearest_resize_by_an_integer_factor_repeats_each_voxel():
    labels = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    out = nearest_resize(labels, (3, 4, 9))
    assert out.shape == (3, 4, 9)
    assert np.array_equal(out, np.repeat(np.repeat(np.repeat(labels, 3, 0), 2, 1), 3, 2))


def test_nearest_resize_picks_the_source_voxel_whose_span_holds_each_output_centre():
    labels = np.array([[[1, 2, 3]]], dtype=np.uint8)  # three voxels resampled to five along the last axis
    # output centres at (i + 0.5) * 3 / 5 = 0.3, 0.9, 1.5, 2.1, 2.7 lie in source voxels 0, 0, 1, 2, 2
    assert nearest_resize(labels, (1, 1, 5))[0, 0].tolist() == [1, 1, 2, 3, 3]


def test_nearest_resize_down_then_up_is_the_identity_on_blocks():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 5, (4, 3, 5)).astype(np.uint8)
    fine = nearest_resize(coarse, (12, 9, 15))
    assert np.array_equal(nearest_resize(fine, coarse.shape), coarse)


def test_nnunet_steps_refuse_to_run_against_other_folders(monkeypatch, tmp_path):
    expected = {k: str(tmp_path / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for key, value in expected.items():
        monkeypatch.setenv(key, value)
    check_nnunet_folders(expected)
    monkeypatch.setenv("nnUNet_results", "/elsewhere")
    with pytest.raises(PlanningError, match="nnUNet_results.*/elsewhere.*python -m cadsflow.specialists"):
        check_nnunet_folders(expected)


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from cadsflow.specialists.planning import extract_fingerprint, preprocess
    from cadsflow.specialists.presets import load_preset
    import dataclasses
    mode = sys.argv[1]
    preset = dataclasses.replace(load_preset("smoke"), num_processes=1 if mode == "serial" else 2)
    if __name__ == "__main__":
        fingerprint = extract_fingerprint(551, preset.num_processes, preset.fingerprint_samples)
        from cadsflow.specialists.planning import _planner
        _planner(551, preset).plan_experiment()
        preprocess(551, "Dataset551_Tiny", preset)
        print(json.dumps(fingerprint, default=lambda o: np.asarray(o).tolist()))
""")


@pytest.mark.slow
def test_serial_fingerprint_and_preprocessing_equal_nnunets_pooled_ones(tmp_path):
    raw = tmp_path / "raw"
    folder = raw / "Dataset551_Tiny"
    rng = np.random.default_rng(3)
    for i in range(3):
        labels = np.zeros((24, 20, 28), dtype=np.uint8)
        labels[6 + i:14 + i, 5:13, 8:20] = 1
        labels[2:6, 2:6, 2:6] = 2
        image = rng.normal(30, 10, labels.shape) + 300.0 * labels
        affine = spacing_affine((1.5, 1.5, 2.0))
        write_nifti(folder / "imagesTr" / f"case{i}_0000.nii.gz", image.astype(np.int16), affine)
        write_nifti(folder / "labelsTr" / f"case{i}.nii.gz", labels, affine)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1, "liver": 2}, "numTraining": 3,
        "file_ending": ".nii.gz", "overwrite_image_reader_writer": "NibabelIO"}))
    (tmp_path / "run.py").write_text(SCRIPT)
    results = {}
    for mode in ("serial", "pooled"):
        env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(tmp_path / mode),
                   nnUNet_results=str(tmp_path / "results"),
                   PYTHONPATH=os.pathsep.join([str(REPO / "workflow_scripts"), os.environ.get("PYTHONPATH", "")]))
        run = subprocess.run([sys.executable, str(tmp_path / "run.py"), mode], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["serial"] == results["pooled"]
    serial = tmp_path / "serial" / "Dataset551_Tiny" / "nnUNetPlansCadsSmoke_3d_fullres"
    pooled = tmp_path / "pooled" / "Dataset551_Tiny" / "nnUNetPlansCadsSmoke_3d_fullres"
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in pooled.iterdir()) and len(names) >= 6  # data + seg (+ pkl) per case
    for name in names:
        assert (serial / name).read_bytes() == (pooled / name).read_bytes(), name
    plans = json.loads((tmp_path / "serial" / "Dataset551_Tiny" / "nnUNetPlansCadsSmoke.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] == 8
    assert max(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]) <= 64
