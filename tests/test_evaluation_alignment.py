"""Dataset label alignment (Online Methods 5.2) as data: merged classes, lesions into organs, annotated slices
only, excluded cases, and classes derived from the source registry."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import spacing_affine, write_nifti

from cadsflow.evaluation.alignment import (
    ALIGNMENT_YAML,
    AlignmentError,
    load_alignment,
    resolve_alignment,
)
from cadsflow.evaluation.evaluate import EXCLUDED_CASE, evaluate_volume
from cadsflow.labels import load_label_space
from cadsflow.sources import load_registry

SPACE = load_label_space()


def gid(name):
    return SPACE.by_name(name).global_id


def ball(shape, centre, radius):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def by_structure(rows):
    return {r["structure"]: r for r in rows}


def test_every_source_in_the_shipped_alignment_file_resolves_to_valid_classes():
    from cadsflow.paths import CONFIG_DIR

    config = load_alignment(ALIGNMENT_YAML)
    registry = load_registry(CONFIG_DIR / "sources" / "cads_collection.yaml")
    resolved = {name: resolve_alignment(name, config, registry) for name in config.sources}
    assert all(a.classes for a in resolved.values()) and len(resolved) == 10


def test_unknown_source_without_registry_is_scored_on_all_unified_structures():
    alignment = resolve_alignment("someone_elses_folder")
    assert [c.name for c in alignment.classes] == list(SPACE.names())


def test_kits_kidneys_are_both_predicted_kidneys_against_kidney_plus_tumour(tmp_path):
    shape = (40, 30, 20)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    right, left = ball(shape, (10, 15, 10), 6), ball(shape, (30, 15, 10), 6)
    ref[right | left] = 1
    ref[ball(shape, (30, 15, 10), 2)] = 2  # tumour inside the left kidney
    pred[right] = gid("kidney_right")
    pred[left] = gid("kidney_left")
    affine = spacing_affine((1.0, 1.0, 1.0))
    rows = evaluate_volume("k", "kits", write_nifti(tmp_path / "r.nii.gz", ref, affine),
                           {"model": write_nifti(tmp_path / "p.nii.gz", pred, affine)},
                           resolve_alignment("kits"), {})  # fmt: skip
    assert by_structure(rows)["kidneys"]["dice"] == 1.0


def test_saros_like_source_is_scored_on_annotated_slices_only(tmp_path):
    shape = (30, 30, 25)
    body = ball(shape, (15, 15, 12), 10)
    ref = np.full(shape, 255, np.uint8)
    ref[:, :, ::5] = np.where(body[:, :, ::5], 1, 0)  # every 5th slice annotated
    pred = np.where(body, gid("subcutaneous_tissue"), 0).astype(np.uint8)
    pred[:, :, 1::5] = 0  # errors on unannotated slices must not count
    affine = spacing_affine((1.5, 1.5, 1.5))
    rows = evaluate_volume("s", "saros", write_nifti(tmp_path / "r.nii.gz", ref, affine),
                           {"model": write_nifti(tmp_path / "p.nii.gz", pred, affine)},
                           resolve_alignment("saros"), {})  # fmt: skip
    row = by_structure(rows)["subcutaneous_tissue"]
    assert (row["dice"], row["nsd"]) == (1.0, 1.0)


def test_verse_case_with_a_transitional_vertebra_is_excluded_whole(tmp_path):
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:4, 2:4] = 20  # L1
    ref[5:7, 5:7, 5:7] = 25  # L6
    affine = spacing_affine((1.0, 1.0, 1.0))
    rows = evaluate_volume("v", "verse", write_nifti(tmp_path / "r.nii.gz", ref, affine),
                           {"model": write_nifti(tmp_path / "p.nii.gz", ref, affine)},
                           resolve_alignment("verse"), {})  # fmt: skip
    assert {r["status"] for r in rows} == {EXCLUDED_CASE}


def registry_with(tmp_path, label_values, **extra):
    path = tmp_path / "registry.yaml"
    entry = {"images": "img/{case}.nii.gz", "labels": "lab/{case}.nii.gz", "label_values": label_values, **extra}
    path.write_text(yaml.safe_dump({"sources": {"demo_src": entry}}))
    return load_registry(path)


def test_registry_union_becomes_one_merged_class_and_its_lesion_joins_it(tmp_path):
    registry = registry_with(tmp_path, {
        1: {"union": ["kidney_left", "kidney_right"], "name": "kidneys"},
        2: {"lesion_of": ["kidney_right"], "name": "kidney_tumor"},
        3: "spleen",
    })  # fmt: skip
    alignment = resolve_alignment("demo_src", registry=registry)
    assert alignment.class_spec(SPACE) == {
        "kidneys": ((1, 2), (gid("kidney_left"), gid("kidney_right"))),
        "spleen": ((3,), (gid("spleen"),)),
    }


def test_registry_unannotated_value_switches_on_annotated_slices_only(tmp_path):
    registry = registry_with(tmp_path, {1: "muscle", 255: {"unannotated": True}}, sparse_slices=5)
    assert resolve_alignment("demo_src", registry=registry).unannotated_value == 255


def test_alignment_naming_an_unknown_structure_is_refused_with_the_file_and_source(tmp_path):
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump({"sources": {"x": {"classes": {"a": {"reference": [1], "prediction": ["kidneyz"]}}}}}))
    with pytest.raises(AlignmentError, match=r"align.yaml: source 'x'.*'kidneyz'"):
        resolve_alignment("x", load_alignment(path))


def test_alignment_refuses_a_structure_predicted_into_two_classes(tmp_path):
    path = tmp_path / "align.yaml"
    classes = {"a": {"reference": [1], "prediction": ["liver"]}, "b": {"reference": [2], "prediction": ["liver"]}}
    path.write_text(yaml.safe_dump({"sources": {"x": {"classes": classes}}}))
    with pytest.raises(AlignmentError, match="more than one class"):
        resolve_alignment("x", load_alignment(path))
