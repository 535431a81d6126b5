"""The authors' test split in the registry (issue 10, item 1) and sources with more than one label file per case."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import SHARED

from cadsflow.paths import CONFIG_DIR
from cadsflow.sources import discover_volumes, label_files, load_registry

REGISTRY = CONFIG_DIR / "sources" / "cads_collection.yaml"
SPLIT_FILE = SHARED / "data" / "cads_test_split" / "image_ids_test_split.txt"
# Table A.3 (paper), test column, per labelled source; written out here, independent of the registry's table_a3
TABLE_A3_TEST = {
    "visceral_gold_corpus": 8, "visceral_silver_corpus": 26, "kits": 60, "lits": 70, "btcv_abdomen": 6,
    "btcv_cervix": 6, "chaos": 10, "ct_org": 28, "abdomenct_1k": 151, "verse": 74, "learn2reg": 8, "sliver07": 20,
    "empire10": 12, "totalsegmentator": 65, "amos": 39, "han_seg": 12, "saros": 150,
}  # fmt: skip
# the authors' dataset folder names (their test split file) -> registry source names
AUTHOR_DATASETS = {
    "0001_visceral_gc": "visceral_gold_corpus", "0002_visceral_sc": "visceral_silver_corpus", "0003_kits21": "kits",
    "0004_lits": "lits", "0005_bcv_abdomen": "btcv_abdomen", "0006_bcv_cervix": "btcv_cervix", "0007_chaos": "chaos",
    "0008_ctorg": "ct_org", "0009_abdomenct1k": "abdomenct_1k", "0010_verse": "verse", "0014_learn2reg": "learn2reg",
    "0018_sliver07": "sliver07", "0034_empire": "empire10", "0037_totalsegmentator": "totalsegmentator",
    "0038_amos": "amos", "0039_han_seg": "han_seg", "0040_saros": "saros",
}  # fmt: skip


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY)


def test_registry_test_lists_have_table_a3_counts_per_source(registry):
    counts = {name: len(s.test_cases) for name, s in registry.items() if s.test_cases}
    assert counts == TABLE_A3_TEST and sum(counts.values()) == 745


def test_registry_uses_explicit_test_lists_and_no_hashed_fraction(registry):
    assert {name: s.test_fraction for name, s in registry.items() if s.test_fraction} == {}


@pytest.mark.skipif(not SPLIT_FILE.exists(), reason=f"{SPLIT_FILE} not present (../shared is absent)")
def test_registry_test_lists_are_the_authors_published_ids(registry):
    published: dict[str, set[str]] = {}
    dataset = None
    for line in SPLIT_FILE.read_text().splitlines():
        if line.startswith("Dataset:"):
            dataset = AUTHOR_DATASETS[line.split()[1]]
            published[dataset] = set()
        elif re.fullmatch(r"  \S+", line):
            published[dataset].add(line.strip())
    assert {name: set(s.test_cases) for name, s in registry.items() if s.test_cases} == published


def _write_cases(folder, cases):
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (folder / f"{case}.nii.gz").write_bytes(b"")


def test_explicit_test_cases_are_test_and_all_other_labelled_cases_train(tmp_path):
    cases = [f"c{i:02d}" for i in range(20)]
    _write_cases(tmp_path / "img", cases)
    _write_cases(tmp_path / "lab", cases[:18])  # c18, c19 unlabelled
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"sources": {"s": {
        "images": "img/{case}.nii.gz", "labels": "lab/{case}.nii.gz", "label_values": {1: "liver"},
        "split": {"test": ["c03", "c07", "c19"]}}}}))  # fmt: skip
    splits = {v.volume_id: v.split for v in discover_volumes(load_registry(tmp_path / "r.yaml"))}
    assert sorted(k for k, v in splits.items() if v == "test") == ["s_c03", "s_c07"]
    assert splits["s_c19"] == splits["s_c18"] == "train_unlabelled"
    assert sum(v == "train_gt" for v in splits.values()) == 16


def test_a_case_with_two_label_files_lists_both_and_a_case_with_one_lists_one(tmp_path):
    _write_cases(tmp_path / "img", ["a", "b"])
    _write_cases(tmp_path / "lab", ["a", "b"])
    _write_cases(tmp_path / "oar", ["a"])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"sources": {"s": {
        "images": "img/{case}.nii.gz", "labels": "lab/{case}.nii.gz", "label_values": {1: "liver"},
        "extra_label_sets": {"oar": {"labels": "oar/{case}.nii.gz", "label_values": {1: "heart"}},
                             "atlas": {"label_values": {1: "white matter"}}}}}}))  # fmt: skip
    source = load_registry(tmp_path / "r.yaml")["s"]
    assert label_files(source, "a") == {"main": str(tmp_path / "lab" / "a.nii.gz"), "oar": str(tmp_path / "oar" / "a.nii.gz")}
    assert label_files(source, "b") == {"main": str(tmp_path / "lab" / "b.nii.gz")}


def test_visceral_gold_corpus_carries_its_oar_label_file_pattern(registry):
    source = registry["visceral_gold_corpus"]
    assert set(source.extra_labels) == {"oar"} and source.extra_labels["oar"].endswith("labels_oar/{case}.nii.gz")
