"""python -m cadsflow.shape_qc: train, score, exclude and gallery chained through files, as the rules will call them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cadsflow.shape_qc.__main__ import _globbed_image, main
from cadsflow.shape_qc.exclude import EXCLUSION_COLUMNS
from cadsflow.shape_qc.presets import load_preset
from cadsflow.shape_qc.score_table import FAILED, SCORE_COLUMNS, WHOLE_VOLUME

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N_551 = 17  # structures of group 551 (config/structures.tsv): label ids 1..17


def _label_map(radius: float, offset: int) -> np.ndarray:
    grid = np.indices((20, 20, 20))
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[((grid - np.array([8 + offset, 10, 10])[:, None, None, None]) ** 2).sum(axis=0) <= radius**2] = 1
    labels[12 + offset:16 + offset, 7:13, 7:13] = 5  # 551: 1 spleen, 5 liver
    return labels


@pytest.fixture()
def tiny_config(tmp_path):
    tiny = load_preset("demo").with_overrides(
        latent_dim=8, hidden_width=16, num_layers=3, coord_layers=(0,), coord_scale_mm=10.0, points_per_example=512,
        batch_size=2, epochs=5, recon_steps=5, recon_points=512, gallery_volumes=2, threads=1)
    values = asdict(tiny)
    values["coord_layers"] = list(values["coord_layers"])
    path = tmp_path / "shape_qc.yaml"
    path.write_text(yaml.safe_dump({"tiny": values}))
    return path


def _save(path, data):
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return str(path)


def test_train_score_exclude_gallery_through_the_command_line(tmp_path, tiny_config):
    gt = [_save(tmp_path / f"gt{i}.nii.gz", _label_map(3.0 + 0.5 * i, i % 2)) for i in range(4)]
    # the pseudolabel stage's layout: each shard's maps in the folder beside its report (pl/shard_k.tsv, pl/shard_k/)
    shards = [tmp_path / "pl" / "shard_0", tmp_path / "pl" / "shard_1"]
    for folder in shards:
        folder.mkdir(parents=True)
    pseudo = [_save(shards[i // 5] / f"case{i}.nii.gz", _label_map(3.5, 0)) for i in range(9)]
    (shards[1] / "broken.nii.gz").write_bytes(b"not a nifti")
    pseudo.append(str(shards[1] / "broken.nii.gz"))
    for k, folder in enumerate(shards):
        rows = [f"{Path(p).name.removesuffix('.nii.gz')}\tok\tpredicted\n" for p in pseudo if Path(p).parent == folder]
        folder.with_suffix(".tsv").write_text("volume_id\tstatus\treason\n" + "".join(rows) + f"q{k}\tquarantined\tx\n")
    ct = [_save(tmp_path / f"ct_{Path(p).name}", np.full((20, 20, 20), 40, dtype=np.int16)) for p in pseudo]
    common = ["--preset", "tiny", "--config", str(tiny_config)]
    torch_common = common + ["--threads", "1", "--seed", "0"]

    assert main(["train", *torch_common, "--group", "551", "--labels", *gt, "--out", str(tmp_path / "prior.pt")]) == 0
    assert main(["score", *torch_common, "--prior", str(tmp_path / "prior.pt"), "--labels", *pseudo,
                 "--out", str(tmp_path / "scores.tsv")]) == 0
    assert main(["exclude", *common, "--scores", str(tmp_path / "scores.tsv"), "--out", str(tmp_path / "excl.tsv"),
                 "--images-out", str(tmp_path / "images.tsv"), "--merged-out", str(tmp_path / "merged.tsv")]) == 0
    assert main(["gallery", *torch_common, "--prior", str(tmp_path / "prior.pt"), "--scores",
                 str(tmp_path / "scores.tsv"), "--labels", *pseudo, "--images", *ct,
                 "--out", str(tmp_path / "gallery.png")]) == 0

    scores = pd.read_csv(tmp_path / "scores.tsv", sep="\t", keep_default_na=False)
    assert (tmp_path / "merged.tsv").read_text() == (tmp_path / "scores.tsv").read_text()
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == 9 * N_551 + 1  # every structure of every readable volume, one row for the broken one
    broken = scores[scores["volume_id"] == "broken"]
    assert broken[["structure", "status"]].values.tolist() == [[WHOLE_VOLUME, FAILED]]
    excluded = pd.read_csv(tmp_path / "excl.tsv", sep="\t")
    assert list(excluded.columns) == list(EXCLUSION_COLUMNS)
    assert list(excluded["volume_id"]) == ["broken"]  # 10 images: quota 1, taken by the failed one
    assert (tmp_path / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the rules' form: scoring finds each shard report's ok maps in the folder beside it (the quarantined volumes
    # are not scored); the gallery indexes the group's shard folders and takes a CT pattern instead of 22,000 paths
    assert main(["score", *torch_common, "--prior", str(tmp_path / "prior.pt"), "--shard-report",
                 *(str(f.with_suffix(".tsv")) for f in shards), "--out", str(tmp_path / "from_reports.tsv")]) == 0
    assert (tmp_path / "from_reports.tsv").read_text() == (tmp_path / "scores.tsv").read_text()
    assert main(["gallery", *torch_common, "--prior", str(tmp_path / "prior.pt"), "--scores",
                 str(tmp_path / "scores.tsv"), "--label-dir", *map(str, shards),
                 "--image-glob", str(tmp_path / "ct_{volume_id}.nii.gz"), "--out", str(tmp_path / "g2.png")]) == 0
    assert (tmp_path / "g2.png").stat().st_size > 0


def test_the_image_pattern_finds_one_volumes_ct_or_none(tmp_path):
    for batch in ("b0", "b1"):
        (tmp_path / batch / "v1").mkdir(parents=True)
    (tmp_path / "b1" / "v1" / "image.nii.gz").write_bytes(b"")
    pattern = str(tmp_path / "*" / "{volume_id}" / "image.nii.gz")
    assert _globbed_image(pattern, "v1") == tmp_path / "b1" / "v1" / "image.nii.gz"
    assert _globbed_image(pattern, "v2") is None


def test_score_rejects_volume_ids_that_do_not_match_the_labels(tmp_path, tiny_config):
    with pytest.raises(SystemExit, match="--volume-ids names 1 volumes, --labels 2"):
        main(["score", "--preset", "tiny", "--config", str(tiny_config), "--prior", "p.pt", "--labels", "a", "b",
              "--volume-ids", "x", "--out", str(tmp_path / "s.tsv")])


def test_an_unknown_preset_key_is_named(tmp_path):
    values = asdict(load_preset("demo"))
    values["coord_layers"] = list(values["coord_layers"])
    values["latent_dims"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"demo": values}))
    with pytest.raises(ValueError, match=r"bad.yaml: preset 'demo': unknown keys \['latent_dims'\]"):
        load_preset("demo", path)


def test_the_shipped_presets_load():
    assert load_preset("paper").latent_dim == 128
    assert load_preset("demo").exclude_fraction == 0.10
