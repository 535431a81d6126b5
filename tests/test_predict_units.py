"""cads-predict's parts without a trained model: finding models and ordering groups, the combined map's layers,
statistics, the head-gate decisions, the preview's orientation, and the CLI's refusals (exit 2, nothing written).
"""

import json

import numpy as np
import pytest

from helpers import ct_array, spacing_affine, write_nifti

from cadsflow.gt.nnunet_dataset import dataset_json
from cadsflow.labels import GROUP_IDS, load_label_space
from cadsflow.predict import __main__ as cli
from cadsflow.predict.combine import combine_groups, paint_order
from cadsflow.predict.models import (
    FINAL,
    SPECIALIST,
    ModelNotFoundError,
    find_models,
    parse_groups,
    required_groups,
    run_order,
)
from cadsflow.predict.pipeline import BRAIN_BOX, NO_BRAIN, needs_prediction, refine_head
from cadsflow.predict.preview import label_colours, preview_centre, to_ras, view_aspects, view_planes, write_preview
from cadsflow.predict.statistics import label_medians, structure_statistics
from cadsflow.pseudolabel.postprocess import (
    BRAIN_MIN_VOXELS,
    HEAD_NECK_NONE,
    HEAD_NECK_VERTEBRAE,
    brain_label_id,
)

SPACE = load_label_space()


def gid(name):
    return SPACE.by_name(name).global_id


def lid(name):
    return SPACE.by_name(name).label_id


# -- models and group order ---------------------------------------------------------------------------------------


def write_model(root, group, kind_folder="specialists/models", labels_of=None, checkpoint=True):
    """A trained-model folder as the factory leaves it (dataset.json, fold_all/checkpoint_final.pth) and its marker.
    The checkpoint is an empty file: these tests never load it."""
    model_dir = root / "nnUNet_results" / kind_folder / f"Dataset{group}_X" / "Trainer__Plans__3d_fullres"
    (model_dir / "fold_all").mkdir(parents=True)
    (model_dir / "dataset.json").write_text(json.dumps(dataset_json(labels_of or group, SPACE, 1, False)))
    if checkpoint:
        (model_dir / "fold_all" / "checkpoint_final.pth").write_bytes(b"")
    marker = root / kind_folder / f"{group}.done"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"group": group, "model_dir": str(model_dir), "fold": "all",
                                  "checkpoint": str(model_dir / "fold_all" / "checkpoint_final.pth")}))
    return model_dir


def test_run_order_puts_553_first_and_every_group_after_the_groups_it_depends_on():
    assert run_order({551, 552, 553, 557, 558}) == (553, 551, 552, 557, 558)
    assert run_order(GROUP_IDS) == (553, 551, 552, 554, 555, 556, 557, 558, 559)


def test_required_groups_add_the_brain_group_to_head_groups_and_the_spine_to_558():
    assert required_groups((557,)) == (553, 557)
    assert required_groups((558,)) == (552, 553, 558)
    assert required_groups((551, 559)) == (551, 559)


def test_groups_option_parses_ids_and_names_an_unknown_group():
    assert parse_groups("559, 553") == (553, 559)
    assert parse_groups(None) == GROUP_IDS
    with pytest.raises(ValueError, match="550"):
        parse_groups("550,551")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_groups("brain")


def test_final_model_is_preferred_over_the_specialist_per_group(tmp_path):
    write_model(tmp_path, 553)
    write_model(tmp_path, 559)
    final_559 = write_model(tmp_path, 559, kind_folder="final/models")
    models = find_models(tmp_path, (553, 559), SPACE)
    assert {g: m.kind for g, m in models.items()} == {553: SPECIALIST, 559: FINAL}
    assert models[559].model_dir == final_559 and models[559].marker == tmp_path / "final/models/559.done"


def test_a_folder_of_markers_is_accepted_as_models(tmp_path):
    write_model(tmp_path, 559)
    assert find_models(tmp_path / "specialists" / "models", (559,), SPACE)[559].kind == SPECIALIST


def test_a_head_group_without_the_brain_groups_model_is_an_error_naming_group_553(tmp_path):
    write_model(tmp_path, 557)
    with pytest.raises(ModelNotFoundError, match=r"group 553: no trained model .*553\.done.*never downloads"):
        find_models(tmp_path, (557,), SPACE)


def test_a_model_trained_on_another_groups_labels_is_refused(tmp_path):
    write_model(tmp_path, 559, labels_of=553)
    with pytest.raises(ModelNotFoundError, match=r"group 559: .*dataset.json does not list the group's label ids"):
        find_models(tmp_path, (559,), SPACE)


def test_a_marker_naming_a_missing_checkpoint_is_refused_with_its_path(tmp_path):
    model_dir = write_model(tmp_path, 559, checkpoint=False)
    with pytest.raises(ModelNotFoundError, match=str(model_dir / "fold_all" / "checkpoint_final.pth")):
        find_models(tmp_path, (559,), SPACE)


# -- combined map ---------------------------------------------------------------------------------------------------


def column(*values):
    """A (n, 1, 1) label map: one voxel per value, so each position is one constructed case."""
    return np.array(values, dtype=np.uint8).reshape(-1, 1, 1)


def test_structures_are_painted_over_body_regions_and_parents():
    # voxel: 0 muscle only; 1 heart over muscle; 2 myocardium over heart over muscle; 3 nothing;
    #        4 brain (553) alone; 5 gray matter (557) over brain
    maps = {
        559: column(lid("muscle"), lid("muscle"), lid("muscle"), 0, 0, 0),
        556: column(0, lid("heart"), lid("heart"), 0, 0, 0),
        553: column(0, 0, lid("heart_myocardium"), 0, lid("brain"), lid("brain")),
        557: column(0, 0, 0, 0, 0, lid("gray matter")),
    }
    combined = combine_groups(maps, SPACE).ravel().tolist()
    assert combined == [gid("muscle"), gid("heart"), gid("heart_myocardium"), 0, gid("brain"), gid("gray matter")]


def test_among_fine_structures_the_later_group_wins_as_in_the_authors_order():
    maps = {553: column(lid("esophagus"), lid("esophagus")), 558: column(lid("OAR_Esophagus_S"), 0)}
    assert combine_groups(maps, SPACE).ravel().tolist() == [gid("OAR_Esophagus_S"), gid("esophagus")]


def test_paint_order_is_body_regions_then_parents_then_fine_structures():
    steps = [(g, tuple(s.name for s in members)) for g, members in paint_order((553, 556, 559), SPACE)]
    assert [g for g, _ in steps] == [559, 553, 556, 553, 556]
    assert steps[1][1] == ("brain", "face") and steps[2][1] == ("heart", "bowel_bag")
    assert "esophagus" in steps[3][1] and "heart" not in steps[4][1]


def test_combine_refuses_maps_on_different_grids():
    with pytest.raises(ValueError, match="different grids"):
        combine_groups({553: np.zeros((2, 2, 2), np.uint8), 559: np.zeros((2, 2, 3), np.uint8)}, SPACE)


# -- statistics -------------------------------------------------------------------------------------------------


def test_statistics_give_volume_in_ml_and_mean_and_median_hu_per_structure():
    affine = spacing_affine((2.0, 2.0, 2.5))  # 10 mm^3 = 0.01 ml per voxel
    image = np.zeros((4, 1, 1), dtype=np.int16)
    image[:, 0, 0] = [10, 20, 60, -5]
    labels_559 = column(lid("muscle"), lid("muscle"), lid("muscle"), lid("bones"))
    stats = structure_statistics({559: labels_559}, image, affine, SPACE)
    muscle, bones, glands = (stats["structures"][n] for n in ("muscle", "bones", "glands"))
    assert stats["voxel_volume_ml"] == pytest.approx(0.01)
    assert (muscle["voxels"], muscle["volume_ml"], muscle["mean_hu"], muscle["median_hu"]) == (3, pytest.approx(0.03),
                                                                                               30.0, 20.0)
    assert (bones["voxels"], bones["mean_hu"], bones["median_hu"]) == (1, -5.0, -5.0)
    assert (glands["voxels"], glands["volume_ml"], glands["mean_hu"], glands["median_hu"]) == (0, 0.0, None, None)
    assert list(stats["structures"]) == [s.name for s in SPACE.group(559)]  # every structure, global-id order


def test_label_medians_equal_numpys_median_for_integer_and_float_images():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, (20, 18, 10)).astype(np.uint8)
    labels[labels == 4] = 0  # an absent label
    for image in (rng.integers(-1024, 2000, labels.shape).astype(np.int16), rng.normal(0, 300, labels.shape)):
        medians = label_medians(image, labels, 6)
        expected = [np.median(image[labels == i]) if (labels == i).any() else np.nan for i in range(6)]
        np.testing.assert_array_equal(medians[1:], expected[1:])


def test_label_median_of_an_even_count_is_the_mean_of_the_two_middle_values():
    image = np.array([1, 2, 3, 10, 7], dtype=np.int16).reshape(-1, 1, 1)
    assert label_medians(image, column(1, 1, 1, 1, 0), 2)[1] == 2.5


# -- head groups ----------------------------------------------------------------------------------------------------

HEAD_SHAPE = (20, 20, 20)


def brain_map(voxels):
    labels = np.zeros(HEAD_SHAPE, dtype=np.uint8)
    labels.reshape(-1)[:voxels] = brain_label_id(SPACE)
    return labels


def spine_map(vertebra=None, z=None):
    labels = np.zeros(HEAD_SHAPE, dtype=np.uint8)
    if vertebra:
        labels[8:11, 8:11, z] = lid(vertebra)
    return labels


def test_557_is_run_only_when_the_brain_reaches_the_gate():
    assert not needs_prediction(557, {553: brain_map(BRAIN_MIN_VOXELS - 1)})
    assert needs_prediction(557, {553: brain_map(BRAIN_MIN_VOXELS)})
    assert needs_prediction(551, {})  # other groups do not depend on the brain


def test_557_without_brain_is_emptied_and_with_brain_kept_inside_the_box():
    predicted = np.ones(HEAD_SHAPE, dtype=np.uint8)
    emptied, mode = refine_head(557, predicted, {553: brain_map(BRAIN_MIN_VOXELS - 1)})
    assert mode == NO_BRAIN and not emptied.any()
    kept, mode = refine_head(557, predicted, {553: brain_map(BRAIN_MIN_VOXELS)})
    assert mode == BRAIN_BOX and np.array_equal(kept, predicted)  # the 100-voxel box covers this small volume


def test_558_without_brain_keeps_the_neck_above_the_lowest_upper_vertebra_of_552():
    maps = {553: brain_map(10), 552: spine_map("vertebrae_C5", z=7)}
    assert needs_prediction(558, maps)
    kept, mode = refine_head(558, np.ones(HEAD_SHAPE, dtype=np.uint8), maps)
    assert mode == HEAD_NECK_VERTEBRAE
    assert not kept[:, :, :7].any() and kept[:, :, 7:].all()


def test_558_without_brain_and_without_upper_vertebrae_is_not_run():
    maps = {553: brain_map(10), 552: spine_map("vertebrae_L3", z=7)}  # a lumbar vertebra is no neck
    assert not needs_prediction(558, maps)
    emptied, mode = refine_head(558, np.ones(HEAD_SHAPE, dtype=np.uint8), maps)
    assert mode == HEAD_NECK_NONE and not emptied.any()


def test_non_head_groups_pass_through_unchanged():
    predicted = np.full(HEAD_SHAPE, 3, dtype=np.uint8)
    assert refine_head(551, predicted, {}) == (predicted, "")


# -- preview ------------------------------------------------------------------------------------------------------


def test_views_are_radiological_right_on_the_left_anterior_and_superior_at_the_top():
    volume = np.zeros((4, 5, 6), dtype=np.int16)
    volume[3, 4, 5] = 1  # the patient's most right, anterior and superior voxel (RAS order)
    planes = view_planes(volume, (3, 4, 5))
    assert all(plane[0, 0] == 1 and plane.sum() == 1 for plane in planes.values())
    assert planes["axial"].shape == (5, 4) and planes["coronal"].shape == (6, 4) and planes["sagittal"].shape == (6, 5)


def test_an_lps_stored_volume_is_shown_like_its_ras_twin():
    ras = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    lps = ras[::-1, ::-1, :]
    lps_affine = np.diag([-1.0, -2.0, 3.0, 1.0])
    turned, zooms = to_ras(lps, lps_affine)
    assert np.array_equal(turned, ras) and zooms.tolist() == [1.0, 2.0, 3.0]
    permuted, zooms = to_ras(ras.transpose(2, 0, 1), np.array([[0, 1.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0],
                                                               [0, 0, 0, 1]]))
    assert np.array_equal(permuted, ras) and zooms.tolist() == [1.0, 2.0, 3.0]
    assert view_aspects(zooms) == {"axial": 2.0, "coronal": 3.0, "sagittal": 1.5}


def test_views_cut_through_the_centroid_of_the_labels():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:5, 6:9, 0:3] = 7
    assert preview_centre(labels) == (3, 7, 1)
    assert preview_centre(np.zeros((10, 8, 6), np.uint8)) == (5, 4, 3)


def test_preview_png_shows_the_labels_colour_over_the_ct(tmp_path):
    from matplotlib.image import imread

    image = np.full((30, 30, 30), -500, dtype=np.int16)  # the bottom of the window: black
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[10:20, 10:20, 10:20] = gid("liver")
    write_preview(image, labels, np.eye(4), tmp_path / "with.png")
    write_preview(image, np.zeros_like(labels), np.eye(4), tmp_path / "without.png")
    half_colour = label_colours()[gid("liver"), :3] / 2  # alpha 0.5 over black
    for name, expected in (("with.png", True), ("without.png", False)):
        pixels = imread(tmp_path / name)[..., :3]
        assert pixels.shape[:2] == (400, 1200)
        assert (np.abs(pixels - half_colour).max(axis=-1) < 0.01).any() == expected


# -- command line: refusals ------------------------------------------------------------------------------------


@pytest.fixture
def models_dir(tmp_path):
    write_model(tmp_path / "results", 559)
    return tmp_path / "results"


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_mr_volume_is_refused_with_one_line_exit_2_and_nothing_written(tmp_path, models_dir, capsys):
    rng = np.random.default_rng(0)
    mr = write_nifti(tmp_path / "t1.nii.gz", rng.integers(0, 1500, (20, 18, 16)).astype(np.int16), np.eye(4))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, mr, "-o", out, "--models", models_dir, "--groups", "559")
    assert code == cli.EXIT_REFUSED
    assert len(stderr.strip().splitlines()) == 1
    assert "refused" in stderr and "t1.nii.gz" in stderr and "look like MR" in stderr
    assert not out.exists()


def test_a_truncated_file_is_refused_with_one_line_exit_2_and_nothing_written(tmp_path, models_dir, capsys):
    whole = write_nifti(tmp_path / "ct.nii.gz", ct_array((30, 30, 30)), np.eye(4))
    truncated = tmp_path / "truncated.nii.gz"
    data = open(whole, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, truncated, "-o", out, "--models", models_dir, "--groups", "559")
    assert code == cli.EXIT_REFUSED
    assert len(stderr.strip().splitlines()) == 1 and "truncated.nii.gz" in stderr and "unreadable" in stderr
    assert not out.exists()


def test_a_dicom_series_of_another_modality_is_refused(tmp_path, models_dir, capsys):
    from test_predict_dicom import AFFINE, small_ct, write_ct_series

    write_ct_series(small_ct(), AFFINE, tmp_path / "mr_series", modality="MR")
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, tmp_path / "mr_series", "-o", out, "--models", models_dir, "--groups", "559")
    assert code == cli.EXIT_REFUSED and "DICOM Modality MR, expected CT" in stderr
    assert not out.exists()


def test_a_missing_model_exits_3_naming_the_group_and_writes_nothing(tmp_path, models_dir, capsys):
    ct = write_nifti(tmp_path / "ct.nii.gz", ct_array(), np.eye(4))
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, ct, "-o", out, "--models", models_dir, "--groups", "551,559")
    assert code == cli.EXIT_MODELS and "group 551: no trained model" in stderr
    assert not out.exists()


def test_an_unknown_group_is_refused_before_anything_runs(tmp_path, models_dir, capsys):
    code, _, stderr = run_cli(capsys, tmp_path / "any.nii.gz", "-o", tmp_path / "out", "--groups", "560")
    assert code == cli.EXIT_REFUSED and "560" in stderr


def test_the_console_script_exits_2_for_a_refused_input(tmp_path, models_dir):
    """The real process: `python -m cadsflow.predict` returns the refusal's status to the shell."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    truncated = tmp_path / "empty.nii.gz"
    truncated.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts"))
    result = subprocess.run([sys.executable, "-m", "cadsflow.predict", str(truncated), "-o", str(tmp_path / "out"),
                             "--models", str(models_dir), "--groups", "559"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"cads-predict: refused {truncated}: unreadable: {truncated}: empty file (0 bytes)"
    assert not (tmp_path / "out").exists()


# -- the Snakemake entry ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_entry_runs_under_snakemake_and_reports_refused_volumes_without_failing(tmp_path, models_dir):
    """workflow_scripts/entry/predict_batch.py in a one-rule workflow: a refused volume is a report line, not a
    failed job (constructed model files: nothing here reaches a model)."""
    import subprocess
    import sys
    from pathlib import Path

    from helpers import REPO

    rng = np.random.default_rng(1)
    mr = write_nifti(tmp_path / "mr.nii.gz", rng.integers(0, 900, (20, 18, 16)).astype(np.int16), np.eye(4))
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    volumes = [{"volume_id": "mr", "image": mr}, {"volume_id": "empty", "image": str(tmp_path / "empty.nii.gz")}]
    (tmp_path / "Snakefile").write_text(f"""
rule predict_batch:
    output:
        folder=directory("results/predict/batch0"),
        report="results/predict/batch0.tsv",
    params:
        volumes={volumes!r},
        models={str(models_dir)!r},
        settings={{"groups": [559], "device": "cpu", "fast": True, "dicom_seg": True}},
        standardize=None,
    log:
        "logs/predict/batch0.log",
    threads: 1
    script:
        {str(REPO / "workflow_scripts" / "entry" / "predict_batch.py")!r}
""")
    snakemake = Path(sys.executable).parent / "snakemake"
    result = subprocess.run([str(snakemake), "--cores", "1", "--directory", str(tmp_path), "-s",
                             str(tmp_path / "Snakefile")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "results/predict/batch0.tsv").read_text().splitlines()]
    assert rows[0] == ["volume_id", "status", "reason", "seconds"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("mr", "refused"), ("empty", "refused")]
    assert "look like MR" in rows[1][2] and "empty file" in rows[2][2]
    assert [p.name for p in (tmp_path / "results/predict/batch0").iterdir()] == [".snakemake_timestamp"]
