"""The evaluation scores the final model and compares it with the specialists per structure: constructed test
volumes whose Dice is known (the final model's maps equal the reference; the specialists' miss half of the liver, so
their liver Dice is 2 * 1/2 / (1 + 1/2) = 2/3), scored by the evaluate_batch code and aggregated by the report."""

import numpy as np
import pandas as pd
import pytest
from helpers import spacing_affine, write_nifti

from cadsflow.evaluation.evaluate import VolumeToScore, run_batch
from cadsflow.evaluation.report import REPORT_OUTPUTS, build_report
from cadsflow.labels import load_label_space
from cadsflow.paths import CONFIG_DIR

ALIGNMENT_YAML = CONFIG_DIR / "evaluation_alignment.yaml"
SPACE = load_label_space()
VOLUMES = ("t1", "t2", "t3")
LIVER_SLABS = 10  # the reference liver: 10 slices; the specialists find the first 5


def write_case(tmp_path, volume_id):
    """Reference (global ids) and the group-551 maps (group ids) of the final model and of the specialists."""
    shape, affine = (30, 30, 20), spacing_affine((1.5, 1.5, 1.5))
    spleen, liver = SPACE.by_name("spleen"), SPACE.by_name("liver")
    ref = np.zeros(shape, np.uint8)
    ref[2:10, 2:10, 2:10] = spleen.global_id
    ref[12:28, 12:28, 5:5 + LIVER_SLABS] = liver.global_id
    final = np.zeros(shape, np.uint8)
    final[ref == spleen.global_id] = spleen.label_id
    final[ref == liver.global_id] = liver.label_id
    specialists = final.copy()
    specialists[:, :, 5 + LIVER_SLABS // 2:] = np.where(specialists[:, :, 5 + LIVER_SLABS // 2:] == liver.label_id, 0,
                                                        specialists[:, :, 5 + LIVER_SLABS // 2:])  # fmt: skip
    write_nifti(tmp_path / "ref" / f"{volume_id}.nii.gz", ref, affine)
    write_nifti(tmp_path / "final" / "551" / f"{volume_id}.nii.gz", final, affine)
    write_nifti(tmp_path / "pseudolabels" / "551" / "shard_0" / f"{volume_id}.nii.gz", specialists, affine)


def scored(tmp_path):
    for v in VOLUMES:
        write_case(tmp_path, v)
    specialists = tmp_path / "pseudolabels" / "{group}" / "shard_0"  # a pseudo-label shard's folder of maps
    items = [VolumeToScore(v, "unified", str(tmp_path / "ref" / f"{v}.nii.gz"),
                           str(tmp_path / "final" / "{group}" / f"{v}.nii.gz"),
                           comparisons={"specialists": str(specialists / f"{v}.nii.gz")})
             for v in VOLUMES]  # fmt: skip
    table = tmp_path / "batch.tsv"
    run_batch(items, table, ALIGNMENT_YAML)
    return table


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("final_vs_specialists")
    outputs = {k: str(tmp_path / "report" / (k + (".png" if k in ("radar", "bars", "bubbles") else ".tsv")))
               for k in REPORT_OUTPUTS}  # fmt: skip
    build_report([str(scored(tmp_path))], outputs, n_boot=20, others=["specialists"])
    return {k: (pd.read_csv(p, sep="\t") if p.endswith(".tsv") else p) for k, p in outputs.items()}


def test_each_test_volume_is_scored_for_the_final_model_and_the_specialists(report):
    scores = report["scores"]
    liver = scores[(scores["structure"] == "liver") & (scores["status"] == "scored")]
    by_system = liver.groupby("system")["dice"].apply(list).to_dict()
    assert by_system["model"] == [1.0] * 3
    assert by_system["specialists"] == pytest.approx([2 / 3] * 3, abs=1e-6)


def test_comparison_has_final_vs_specialists_rows_with_the_known_dice_per_structure(report):
    dice = report["comparison"].query("metric == 'dice'").set_index("structure")
    assert set(dice["versus"]) == {"specialists"}
    assert (dice.loc["liver", "n_pairs"], dice.loc["liver", "model_mean"]) == (3, 1.0)
    assert dice.loc["liver", "versus_mean"] == pytest.approx(2 / 3, abs=1e-6)
    assert dice.loc["liver", "delta"] == pytest.approx(1 / 3, abs=1e-6)
    assert (dice.loc["spleen", "delta"], dice.loc["spleen", "test"]) == (0.0, "identical")


def test_summary_gives_the_specialists_the_model_and_their_delta_on_mutual_structures(report):
    summary = report["summary"].query("dataset == 'all' and scope == 'mutual'").set_index("system")
    assert set(summary["versus"]) == {"specialists"}
    assert summary.loc["delta", "dice"] == pytest.approx(summary.loc["model", "dice"] - summary.loc["specialists",
                                                                                                  "dice"])
    assert summary.loc["delta", "dice"] > 0


def test_bubble_figure_is_drawn_for_the_comparison(report):
    with open(report["bubbles"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_comparison_system_may_not_take_a_reserved_name(tmp_path):
    write_case(tmp_path, "t1")
    ref = str(tmp_path / "ref" / "t1.nii.gz")
    item = VolumeToScore("t1", "unified", ref, ref, comparisons={"baseline": ref})
    with pytest.raises(ValueError, match=r"t1: comparison systems may not be named \['baseline'\]"):
        run_batch([item], tmp_path / "b.tsv", ALIGNMENT_YAML)
