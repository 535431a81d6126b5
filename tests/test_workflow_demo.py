"""The README's main job, end to end: the whole factory on the embedded demo cohort (slow: minutes).

One run of the default demo config in a scratch directory; each test then checks one stage's promise.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from cadsflow.labels import load_label_space
from cadsflow.pseudolabel.infer import stored_fingerprint
from cadsflow.specialists.train import read_marker
from workflow_runner import REPO, snakemake, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    config = write_config(workdir)
    snakemake(workdir, config=config, timeout=5400)
    snakemake(workdir, "--report", str(workdir / "report.html"), config=config)
    return workdir


def _tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_every_demo_volume_is_standardized_to_ras_1p5mm_and_none_is_quarantined(demo):
    status = _tsv(demo / "results/quarantine/status.tsv")
    assert len(status) == 21 and {r["status"] for r in status} == {"ok"}
    assert len(_tsv(demo / "results/quarantine/quarantine.tsv")) == 0
    for image in demo.glob("results/standardized/*/*/image.nii.gz"):
        img = nib.load(image)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(img.header.get_zooms(), 1.5)


def test_nine_group_datasets_and_nine_specialists_exist(demo):
    datasets = sorted(p.parent.name for p in demo.glob("results/specialists/nnUNet_raw/*/dataset.json"))
    assert [d[:10] for d in datasets] == [f"Dataset{g}" for g in range(551, 560)]
    markers = sorted(demo.glob("results/specialists/models/*.done"))
    assert [m.stem for m in markers] == [str(g) for g in range(551, 560)]


def test_every_group_was_planned_and_trained_in_its_jobs_own_process_with_the_narrow_demo_network(demo):
    # one Python process per job: nnU-Net's steps run in it (no nnUNetv2_* child process, no spawned pools)
    for group in range(551, 560):
        for step in ("plan", "train"):
            log = (demo / f"logs/specialists/{step}_{group}.log").read_text()
            assert "(nnU-Net in this process)" in log and "plan_and_preprocess_entrypoints" not in log, (group, step)
        plans = next(demo.glob(f"results/specialists/nnUNet_preprocessed/Dataset{group}_*/nnUNetPlansCadsSmoke.json"))
        arch = json.loads(plans.read_text())["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        assert arch["features_per_stage"][0] == 8 and max(arch["features_per_stage"]) <= 64, group


def test_the_demo_cohort_was_written_by_its_rule(demo):
    assert (demo / "logs/demo/demo_cohort.log").is_file()
    assert len(list((demo / "demo").glob("*/images/*.nii.gz"))) == 21


def test_every_volume_has_a_pseudolabel_per_group_on_its_standardized_grid(demo):
    rows = _tsv(demo / "results/pseudolabels/status.tsv")
    assert {r["status"] for r in rows} <= {"ok", "skipped_no_brain"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["volume_id"] for r in ok}) == 21
    grids = {}
    for image in demo.glob("results/standardized/*/*/image.nii.gz"):
        img = nib.load(image)
        grids[image.parent.name] = (img.shape, img.affine)
    for r in ok:  # the status table names each map: results/pseudolabels/<G>/shard_<k>/<id>.nii.gz
        assert r["label_map"].startswith(f"results/pseudolabels/{r['group']}/shard_"), r
        label = nib.load(demo / r["label_map"])
        shape, affine = grids[r["volume_id"]]
        assert label.shape == shape and np.allclose(label.affine, affine)


def test_each_pseudolabel_shard_loads_its_model_once(demo):
    logs = sorted(demo.glob("logs/pseudolabel/*/shard_*.log"))
    assert logs
    for log in logs:
        loads = log.read_text().count("model load:")
        # a head-group shard whose volumes all lack a brain never needs its model
        assert loads == 1 or (loads == 0 and log.parent.name in ("557", "558")), (log, loads)


def test_evaluation_report_has_tables_figures_and_the_html_report(demo):
    report = demo / "results/evaluation/report"
    scores = _tsv(report / "scores.tsv")
    assert {r["volume_id"] for r in scores} >= {"demo_totalseg_case004", "demo_kits_case000"}
    for figure in ("radar_dice.png", "dataset_bars.png", "differences_bubbles.png"):
        assert (report / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (demo / "report.html").read_text(errors="replace")
    assert "radar_dice.png" in html and "summary.tsv" in html


def test_head_groups_are_gated_by_the_brain_of_group_553(demo):
    # Smoke-trained specialists predict near-noise, so which volumes show "brain" varies between machines; the
    # promise checked is the rule itself: a head pseudo-label is skipped exactly when group 553's map of that
    # volume holds fewer than 2000 brain voxels, and a skipped volume gets an empty map on its grid.
    brain_id = load_label_space().group_label_map(553)["brain"]
    status = _tsv(demo / "results/pseudolabels/status.tsv")
    rows = [r for r in status if r["group"] in ("557", "558")]
    brains = {r["volume_id"]: r["label_map"] for r in status if r["group"] == "553"}
    assert len(rows) == 2 * 21
    for r in rows:
        brain = np.asarray(nib.load(demo / brains[r["volume_id"]]).dataobj)
        voxels = int((brain == brain_id).sum())
        head = nib.load(demo / r["label_map"])
        assert head.shape == brain.shape
        if voxels >= 2000:
            assert r["status"] == "ok", (r, voxels)
        elif r["group"] == "557" or not _has_neck(demo, r["volume_id"]):
            assert r["status"] == "skipped_no_brain", (r, voxels)
            assert f"has {voxels} voxels, fewer than 2000" in r["reason"]
            assert not np.asarray(head.dataobj).any()
        else:  # group 558 without brain: kept from the lowest upper vertebra of group 552 up (authors' inference)
            assert r["status"] == "ok", (r, voxels)
            floor = _neck_floor(demo, r["volume_id"])
            assert not np.asarray(head.dataobj)[:, :, :floor].any(), r


def _neck_floor(demo, volume_id):
    from cadsflow.pseudolabel.postprocess import neck_floor_slice

    status = _tsv(demo / "results/pseudolabels/status.tsv")
    path = next(r["label_map"] for r in status if r["group"] == "552" and r["volume_id"] == volume_id)
    return neck_floor_slice(np.asarray(nib.load(demo / path).dataobj))


def _has_neck(demo, volume_id):
    return _neck_floor(demo, volume_id) is not None


def test_shape_qc_scores_every_pseudolabelled_volume_and_excludes_the_worst_tenth_per_group(demo):
    rows = _tsv(demo / "results/pseudolabels/status.tsv")
    for group in range(551, 560):
        folder = demo / f"results/shape_qc/{group}"
        ok = {r["volume_id"] for r in rows if r["group"] == str(group) and r["status"] == "ok"}
        scores = _tsv(folder / "scores.tsv")
        assert {r["volume_id"] for r in scores} == ok, group  # every pseudo-label scored, nothing else
        header = (folder / "scores.tsv").read_text().splitlines()[0].split("\t")
        assert set(header) >= {"volume_id", "structure", "hd90_mm", "status"}  # also when no volume passed a gate
        images = _tsv(folder / "images.tsv")
        excluded = _tsv(folder / "excluded.tsv")
        assert {r["volume_id"] for r in excluded} <= ok
        # round(10% x images), halves up (cadsflow.shape_qc.exclude.exclusion_count); failed maps always go
        assert len(excluded) >= int(len(images) * 0.10 + 0.5), group
        assert (folder / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_predict_rule_segments_a_sheet_of_new_cts_with_the_demo_models_and_refuses_a_non_ct(demo):
    """cads-predict over a sheet through the real Snakefile: one batch job, a report line per volume."""
    new = demo / "new_cts"
    new.mkdir(exist_ok=True)
    mr_like = np.random.default_rng(0).uniform(0, 800, (40, 40, 30)).astype(np.float32)  # no air: not HU
    nib.save(nib.Nifti1Image(mr_like, np.diag([1.5, 1.5, 1.5, 1.0])), new / "mr_like.nii.gz")
    ct = next((demo / "demo" / "demo_saros" / "images").glob("*.nii.gz"))
    (new / "sheet.tsv").write_text(f"volume_id\timage\nct_a\t{ct}\nmr_b\tmr_like.nii.gz\n")
    config = write_config(demo, predict={"sheet": str(new / "sheet.tsv"), "models": "results", "groups": [559],
                                         "device": "", "fast": True, "dicom_seg": True, "statistics": True,
                                         "preview": True, "volumes_per_batch": 100})
    snakemake(demo, "results/predict/predict.0000.tsv", config=config)
    report = {r["volume_id"]: r for r in _tsv(demo / "results/predict/predict.0000.tsv")}
    assert report["ct_a"]["status"] == "ok" and report["mr_b"]["status"] == "refused"
    assert "Hounsfield" in report["mr_b"]["reason"]
    out = demo / "results/predict/predict.0000/ct_a"
    source = nib.load(ct)
    for name in ("group_559.nii.gz", "combined.nii.gz"):
        written = nib.load(out / name)
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)  # the input's grid
    assert not (demo / "results/predict/predict.0000/mr_b").exists()  # nothing written for a refused input


# --- flavors: datasets and training (issue 12) ---


def _flavor_dataset(demo, flavor, group):
    return next(demo.glob(f"results/flavors/{flavor}/nnUNet_raw/Dataset{group}_*"))


def test_27_flavor_models_are_trained_with_the_flavor_trainer_on_the_flavor_configuration(demo):
    markers = sorted(demo.glob("results/flavors/*/models/*.done"))
    assert len(markers) == 27
    for flavor in ("GT", "Pseudo", "Shape"):
        found = sorted(m.stem for m in (demo / f"results/flavors/{flavor}/models").glob("*.done"))
        assert found == [str(g) for g in range(551, 560)], flavor
    for marker in markers:
        record = read_marker(marker)  # paths stored relative to the marker, resolved
        assert (record["trainer"], record["plans"], record["configuration"]) == (
            "nnUNetTrainerCadsFlavorSmoke", "nnUNetPlansCadsFlavorSmoke", "3d_cads_flavor"), marker
        assert Path(record["checkpoint"]).is_file() and Path(record["model_dir"]).is_dir()


def test_flavor_training_sets_gt_is_the_specialists_and_shape_is_pseudo_minus_shape_qc_exclusions(demo):
    splits = {r["volume_id"]: r["split"] for r in _tsv(demo / "demo/volumes.tsv")}
    shape_smaller = []
    for group in range(551, 560):
        specialist = json.loads(next(demo.glob(f"results/specialists/nnUNet_raw/Dataset{group}_*/dataset.json"))
                                .read_text())
        counts, cases = {}, {}
        for flavor in ("GT", "Pseudo", "Shape"):
            folder = _flavor_dataset(demo, flavor, group)
            counts[flavor] = json.loads((folder / "dataset.json").read_text())["numTraining"]
            cases[flavor] = {r["volume_id"] for r in _tsv(folder / "cads_cases.tsv")}
            assert len(cases[flavor]) == counts[flavor] == len(list((folder / "labelsTr").iterdir())), (group, flavor)
            share = _tsv(folder / "cads_gt_share.tsv")
            assert all(int(r["n_from_gt"]) <= int(r["n_volumes_with_structure"]) <= counts[flavor] for r in share)
        assert counts["GT"] == specialist["numTraining"], group
        assert not {v for v in cases["Pseudo"] if splits[v] == "test"}, group  # held-out volumes never train
        excluded = {r["volume_id"] for r in _tsv(demo / f"results/shape_qc/{group}/excluded.tsv")}
        assert cases["Shape"] == cases["Pseudo"] - excluded, group
        if excluded & cases["Pseudo"]:
            assert counts["Shape"] < counts["Pseudo"], group
            shape_smaller.append(group)
    assert shape_smaller  # shape QC excluded someone somewhere (10% of each group's scored pseudo-labels)


def test_flavor_images_are_percentile_scaled_to_0_1_and_the_plans_carry_the_papers_topology(demo):
    for image in demo.glob("results/flavors/images/*/*.nii.gz"):
        data = np.asarray(nib.load(image).dataobj)
        assert data.min() == 0.0 and data.max() == 1.0, image
    for group in range(551, 560):
        pattern = f"results/flavors/Pseudo/nnUNet_preprocessed/Dataset{group}_*/nnUNetPlansCadsFlavorSmoke.json"
        plans = json.loads(next(demo.glob(pattern)).read_text())
        flavor = plans["configurations"]["3d_cads_flavor"]
        kwargs = flavor["architecture"]["arch_kwargs"]
        assert flavor["architecture"]["network_class_name"].endswith(".ResidualUNet")
        assert flavor["normalization_schemes"] == ["NoNormalization"]
        assert (kwargs["n_stages"], kwargs["n_blocks_per_stage"], kwargs["nonlin"]) == (
            5, [2] * 5, "torch.nn.modules.activation.PReLU")


# --- flavors: validation and flavor predictions (issue 12) ---

FLAVORS = ("GT", "Pseudo", "Shape")
PREDICTED = {"ok", "skipped_no_brain"}  # skipped: a head volume gated out, its map empty


def _sheet(demo):
    return {r["volume_id"]: r for r in _tsv(demo / "demo/volumes.tsv")}


def _grid(demo, volume_id):
    img = nib.load(next(demo.glob(f"results/standardized/*/{volume_id}/image.nii.gz")))
    return img.shape, img.affine


def test_every_flavor_of_every_group_predicts_every_validation_volume_on_its_grid_one_load_each(demo):
    test = sorted(v for v, r in _sheet(demo).items() if r["split"] == "test")
    for group in range(551, 560):
        rows = _tsv(demo / f"results/flavors/predictions/{group}/validation.tsv")
        assert sorted((r["flavor"], r["volume_id"]) for r in rows) == sorted(
            (f, v) for f in FLAVORS for v in test), group
        assert {r["status"] for r in rows} <= PREDICTED, group
        for r in rows:
            # flavor_validate's declared folder beside its report: validation/<flavor>/<volume_id>.nii.gz
            label = nib.load(demo / f"results/flavors/predictions/{group}/validation/{r['flavor']}/"
                                    f"{r['volume_id']}.nii.gz")
            shape, affine = _grid(demo, r["volume_id"])
            assert label.shape == shape and np.allclose(label.affine, affine), r
            assert stored_fingerprint(label.get_filename()) is not None
        loads = (demo / f"logs/flavor_predict/{group}/validation.log").read_text().count("model load:")
        assert loads <= 3 and (loads == 3 or group in (557, 558)), (group, loads)


def test_every_non_test_volume_is_predicted_by_the_flavors_ranked_first_for_its_group(demo):
    priority = _tsv(demo / "results/ranking/priority.tsv")
    others = sorted(v for v, r in _sheet(demo).items() if r["split"] != "test")
    for group in range(551, 560):
        chosen = {r["first"] for r in priority if r["group"] == str(group)}
        parts = sorted(demo.glob(f"results/flavors/predictions/{group}/part_*.tsv"))
        rows = [r for part in parts for r in _tsv(part)]
        assert sorted((r["flavor"], r["volume_id"]) for r in rows) == sorted(
            (f, v) for f in chosen for v in others), group
        assert {r["status"] for r in rows} <= PREDICTED, group
        for part in parts:  # each part's maps in its declared folder beside its report, nothing else there
            folder = part.with_suffix("")
            maps = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.nii.gz"))
            assert maps == sorted(f"{r['flavor']}/{r['volume_id']}.nii.gz" for r in _tsv(part)), part
        log = (demo / f"logs/flavor_predict/{group}/part_0.log").read_text()
        assert f"ranks {', '.join(f for f in FLAVORS if f in chosen)} first" in log, group


# --- ranking (issue 12) ---


def test_each_group_has_validation_scores_per_flavor_structure_and_volume_with_id_and_ood(demo):
    sheet = _sheet(demo)
    training = yaml.safe_load((REPO / "config/group_training.yaml").read_text())["presets"]["smoke"]
    space = load_label_space()
    kinds = set()
    for group in range(551, 560):
        path = demo / f"results/ranking/scores/{group}.tsv"
        header = path.read_text().splitlines()[0].split("\t")
        assert header[:7] == ["structure", "group", "flavor", "volume_id", "split_kind", "dice", "hd95"]
        rows = _tsv(path)  # empty where no validation volume annotates a structure of the group (557: atlas only)
        assert not rows or {r["flavor"] for r in rows} == set(FLAVORS), group
        assert {r["structure"] for r in rows} <= {s.name for s in space.group(group)}, group
        for r in rows:
            source = sheet[r["volume_id"]]["source"]
            assert r["split_kind"] == ("ID" if source in training[group] else "OOD"), r
            if r["status"] in ("scored", "false_negative"):
                assert 0.0 <= float(r["dice"]) <= 1.0 and float(r["hd95"]) >= 0.0, r
        kinds |= {r["split_kind"] for r in rows}
    assert kinds == {"ID", "OOD"}


def test_priority_table_ranks_every_structure_of_the_nine_groups_and_the_report_shows_its_chart(demo):
    rows = _tsv(demo / "results/ranking/priority.tsv")
    space = load_label_space()
    assert sorted((r["group"], r["structure"]) for r in rows) == sorted(
        (str(s.group), s.name) for s in space.structures if s.group in range(551, 560))
    for r in rows:
        assert sorted((r["first"], r["second"], r["third"])) == sorted(FLAVORS), r
        assert r["decided_by"], r
    assert any(r["split_kind"] in ("ID", "OOD") for r in rows)  # some structures were decided on scores
    assert (demo / "results/ranking/priority.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "priority.png" in (demo / "report.html").read_text(errors="replace")


# --- assembly and dataset card (issue 13) ---


def _assembly_rows(demo):
    rows = []
    for table in sorted(demo.glob("results/assembled/provenance/*.tsv")):
        rows += _tsv(table)
    return rows


def test_every_volume_has_an_assembled_map_per_group_on_its_standardized_grid(demo):
    ok = {r["volume_id"] for r in _tsv(demo / "results/quarantine/status.tsv") if r["status"] == "ok"}
    assert len(ok) == 21
    assert len(list(demo.glob("results/assembled/provenance/*.tsv"))) == len(
        list(demo.glob("results/standardized/*")))  # one table per standardize batch
    rows = _assembly_rows(demo)
    assert {r["origin"] for r in rows}.isdisjoint({"quarantined"})  # the demo quarantines nothing
    for image in demo.glob("results/standardized/*/*/image.nii.gz"):
        img = nib.load(image)
        for group in range(551, 560):
            batch = image.parent.parent.name  # the batch job's declared folder of the group
            label = nib.load(demo / f"results/assembled/{group}/{batch}/{image.parent.name}.nii.gz")
            assert label.shape == img.shape and np.allclose(label.affine, img.affine), (group, image)


def test_assembled_provenance_counts_add_up_to_each_maps_labelled_voxels(demo):
    totals = {}
    for r in _assembly_rows(demo):
        key = (r["group"], r["volume_id"])
        totals[key] = totals.get(key, 0) + int(r["n_voxels"])
    assert len(totals) == 9 * 21
    files = {(r["group"], r["volume_id"]): r for r in _tsv(demo / "results/assembled/dataset_card/files.tsv")}
    assert set(files) == set(totals)  # the card's files.tsv names every map
    for (group, volume_id), total in totals.items():
        data = np.asarray(nib.load(demo / files[group, volume_id]["label_map"]).dataobj)
        assert int(np.count_nonzero(data)) == total, (group, volume_id)


def test_rib_repair_rows_are_ribs_of_group_555_exactly_where_the_repair_changed_voxels(demo):
    logged = {}
    pattern = re.compile(r"(\S+): ribs refined: (\d+) voxels relabelled \(fragments\), \d+ joint components "
                         r"\((\d+) voxels added\)")
    for log in demo.glob("logs/assembly/*.log"):
        for volume_id, relabelled, added in pattern.findall(log.read_text()):
            logged[volume_id] = int(relabelled) + int(added)
    assert len(logged) == 21  # every volume's ribs went through the refinement
    repaired = {}
    for r in _assembly_rows(demo):
        if r["origin"] == "rib_repair":
            assert r["group"] == "555" and re.fullmatch(r"rib_(left|right)_\d+", r["structure"]), r
            assert int(r["n_voxels"]) > 0
            repaired[r["volume_id"]] = repaired.get(r["volume_id"], 0) + int(r["n_voxels"])
    for volume_id, changed in logged.items():
        # a voxel changed by the repair was relabelled as a fragment or added at a joint (or both)
        assert repaired.get(volume_id, 0) <= changed, volume_id
        if changed == 0:
            assert volume_id not in repaired, volume_id


def test_dataset_card_counts_the_21_assembled_volumes_and_every_stages_training_images(demo):
    card = demo / "results/assembled/dataset_card"
    summary = {r["item"]: int(r["count"]) for r in _tsv(card / "summary.tsv")}
    assert summary == {"assembled_volumes": 21, "quarantined_volumes": 0, "groups": 9}
    structures = _tsv(card / "structures.tsv")
    assert len(structures) == 167 and max(int(r["occurrence"]) for r in structures) <= 21
    training = {r["stage"]: r for r in _tsv(card / "training_images.tsv")}
    assert list(training)[:4] == ["specialists", "GT", "Pseudo", "Shape"]
    for dataset in demo.glob("results/specialists/nnUNet_raw/*/dataset.json"):
        group = dataset.parent.name[7:10]
        assert int(training["specialists"][group]) == json.loads(dataset.read_text())["numTraining"]
    origins = _tsv(card / "origins.tsv")
    overall = [r for r in origins if r["group"] == "all"]
    assert abs(sum(float(r["share"]) for r in overall) - 1.0) < 1e-5  # shares are written with 6 decimals
    assert "Dataset card: 21 assembled volumes" in (card / "card.html").read_text()
    for r in _tsv(card / "files.tsv"):  # every map and provenance file in its group's batch folder
        folder = f"results/assembled/{r['group']}/{r['batch']}"
        assert r["label_map"] == f"{folder}/{r['volume_id']}.nii.gz" and (demo / r["label_map"]).is_file(), r
        assert r["provenance"] == f"{folder}/{r['volume_id']}.provenance.tsv" and (demo / r["provenance"]).is_file()
    assert "card.html" in (demo / "report.html").read_text(errors="replace")  # the report shows the card


# --- final model (issue 14) ---


def _final_dataset(demo, group):
    return next(demo.glob(f"results/final/nnUNet_raw/Dataset{group}_*/dataset.json")).parent


def test_nine_final_models_are_trained_with_the_oversampling_trainer_on_their_assembled_datasets(demo):
    from cadsflow.final.oversampling import read_table

    markers = sorted(demo.glob("results/final/models/*.done"))
    assert [m.stem for m in markers] == [str(g) for g in range(551, 560)]
    for marker in markers:
        record = read_marker(marker)
        assert (record["trainer"], record["fold"]) == ("nnUNetTrainerCadsOversamplingSmoke", "all"), marker
        assert Path(record["checkpoint"]).is_file()
        dataset = _final_dataset(demo, marker.stem)
        spec = json.loads((dataset / "dataset.json").read_text())
        assert "ignore" not in spec["labels"]
        table = read_table(demo / f"results/final/sampling/{dataset.name}.tsv")
        cases = sorted(p.name[: -len(".nii.gz")] for p in (dataset / "labelsTr").glob("*.nii.gz"))
        assert sorted(i.volume_id for i in table.images) == cases and len(cases) == spec["numTraining"]
        assert sum(i.probability for i in table.images) == pytest.approx(1.0)
        test = {r["volume_id"] for r in _tsv(demo / "demo/volumes.tsv") if r["split"] == "test"}
        assert not test & set(cases), marker  # the test split never trains the final model


def test_final_models_predict_every_test_volume_on_its_standardized_grid(demo):
    test = sorted(r["volume_id"] for r in _tsv(demo / "demo/volumes.tsv") if r["split"] == "test")
    for group in range(551, 560):
        rows = {r["volume_id"]: r for r in _tsv(demo / f"results/final/predictions/{group}.tsv")}
        assert sorted(rows) == test, group
        # final_predict's declared folder holds its maps only (the report lies beside it; Snakemake's hidden
        # .snakemake_timestamp of a directory output aside)
        folder = demo / f"results/final/predictions/{group}"
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            f"{v}.nii.gz" for v in test], group
        for volume_id, r in rows.items():
            assert r["status"] in (("ok", "skipped_no_brain") if group in (557, 558) else ("ok",)), r
            image = nib.load(next(demo.glob(f"results/standardized/*/{volume_id}/image.nii.gz")))
            label = nib.load(demo / f"results/final/predictions/{group}/{volume_id}.nii.gz")
            assert label.shape == image.shape and np.allclose(label.affine, image.affine)


def test_evaluation_scores_the_final_model_and_compares_it_with_the_specialists(demo):
    # the model's predicted volumes are those of the final models' maps (not the pseudo-labels')
    space = load_label_space()
    names = {s.name for g in space.groups for s in space.group(g)}
    report = demo / "results/evaluation/report"
    scores = _tsv(report / "scores.tsv")
    assert {"model", "specialists"} <= {r["system"] for r in scores}
    checked = 0
    for r in scores:
        if r["system"] != "model" or r["source"] != "demo_totalseg" or r["status"] != "scored":
            continue
        if r["structure"] not in names:  # a class of several structures
            continue
        structure = space.by_name(r["structure"])
        final = np.asarray(nib.load(demo / f"results/final/predictions/{structure.group}/{r['volume_id']}.nii.gz")
                           .dataobj)  # fmt: skip
        assert float(r["pred_volume_ml"]) == pytest.approx((final == structure.label_id).sum() * 1.5**3 / 1000,
                                                           rel=1e-5), r  # fmt: skip
        checked += 1
    assert checked
    comparison = _tsv(report / "comparison.tsv")
    assert {r["versus"] for r in comparison} == {"specialists"} and {r["metric"] for r in comparison} == {
        "dice", "nsd", "hd", "hd95"}
    summary = _tsv(report / "summary.tsv")
    assert {r["versus"] for r in summary if r["scope"] == "mutual"} == {"specialists"}


# --- anonymization ---


def test_every_new_head_ct_is_released_blurred_or_withheld_with_a_reason_never_released_unblurred(demo):
    folders = sorted((demo / "results/anonymized").iterdir())
    assert folders
    for folder in folders:
        withheld = {r["volume_id"]: r for r in _tsv(folder / "withheld.tsv")}
        released = {p.name for p in folder.iterdir() if p.is_dir()}
        members = {p.name for p in (demo / "results/standardized" / folder.name).iterdir() if p.is_dir()}
        assert released | set(withheld) == members and not released & set(withheld), folder.name
        assert all("face mask is empty" in r["reason"] for r in withheld.values())
        for volume_id in released:
            image = np.asanyarray(nib.load(demo / f"results/standardized/{folder.name}/{volume_id}/image.nii.gz").dataobj)
            blurred = np.asanyarray(nib.load(folder / volume_id / "image.nii.gz").dataobj)
            assert image.shape == blurred.shape and (image != blurred).any(), volume_id


# --- reruns decided by Snakemake (issue 17, item 8). Keep this section LAST: it changes the finished run. ---


def _shard_counts(log_path):
    """(members, predicted) of the last run of a pseudo-label shard, from its log."""
    lines = [line for line in log_path.read_text().splitlines() if " volumes, " in line and "shard of" in line]
    found = re.search(r"shard of (\d+) volumes, (\d+) predicted", lines[-1])
    return int(found.group(1)), int(found.group(2))


def test_a_changed_postprocessing_rule_and_a_forcerun_each_re_predict_the_shard(demo):
    """Snakemake decides what reruns and the job obeys: a changed post-processing file (an input of the shard) and
    a --forcerun each redo every volume of the shard; neither is answered with 'up to date from an earlier run'."""
    target = "results/pseudolabels/551/shard_0.tsv"
    log = demo / "logs/pseudolabel/551/shard_0.log"
    rows = _tsv(demo / target)
    members = [r["volume_id"] for r in rows if r["status"] == "ok"]
    maps = [demo / f"results/pseudolabels/551/shard_0/{v}.nii.gz" for v in members]  # the shard's declared folder
    assert members
    before = {m: stored_fingerprint(m) for m in maps}

    rules = yaml.safe_load((REPO / "config/postprocessing.yaml").read_text())
    rules["structures"]["spleen"] = {"min_voxels": 10**9}  # no spleen component is that large: all removed
    changed = demo / "postprocessing_changed.yaml"
    changed.write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((demo / "test_config.yaml").read_text())
    config["pseudolabel"] = {"postprocessing": str(changed)}  # merged into the defaults by Snakemake
    rerun_config = demo / "rerun_config.yaml"
    rerun_config.write_text(yaml.safe_dump(config))

    snakemake(demo, target, config=rerun_config)
    assert _shard_counts(log) == (len(rows), len(members))
    after = {m: stored_fingerprint(m) for m in maps}
    assert all(after[m] != before[m] for m in maps)  # the rules are part of every map's fingerprint
    spleen = load_label_space().group_label_map(551)["spleen"]
    assert not any((np.asanyarray(nib.load(m).dataobj) == spleen).any() for m in maps)

    mtimes = {m: m.stat().st_mtime_ns for m in maps}
    snakemake(demo, target, "--forcerun", "pseudolabel_shard", config=rerun_config)
    assert _shard_counts(log) == (len(rows), len(members))
    assert all(m.stat().st_mtime_ns > mtimes[m] for m in maps)  # rewritten, not kept
    assert {m: stored_fingerprint(m) for m in maps} == after  # same inputs, same fingerprint
