"""Source label values -> a group's label map: exact structures train, everything uncertain is `ignore`."""

import numpy as np
import pytest

from cadsflow.gt.mapping import MappingError, ignore_label, map_to_group
from cadsflow.gt.phantoms import demo_registry
from cadsflow.gt.provenance import ProvenanceRow, read_provenance, write_provenance
from cadsflow.gt.volume import combine_group_maps
from cadsflow.labels import load_label_space
from cadsflow.sources import load_registry


@pytest.fixture(scope="module")
def space():
    return load_label_space()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_registry(demo_registry(tmp_path_factory.mktemp("reg") / "registry.yaml"), )


def _value(source, name):
    return next(v for v, spec in source.label_values.items() if name in spec.targets or spec.note == name)


def test_exact_structure_gets_its_group_id_and_other_groups_structures_become_background(demo, space):
    ts = demo["demo_totalseg"]
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[0] = _value(ts, "liver")
    labels[1] = _value(ts, "vertebrae_L1")
    out, _ = map_to_group(labels, ts.label_values, 551, space, "volume v1")
    assert (out[0] == space.group_label_map(551)["liver"]).all() and (out[1] == 0).all() and (out[2:] == 0).all()


def test_union_of_both_kidneys_is_ignore_in_their_group_and_background_elsewhere(demo, space):
    kits = demo["demo_kits"]
    labels = np.zeros((2, 2, 2), dtype=np.uint8)
    labels[0] = _value(kits, "kidneys")
    organs, rows = map_to_group(labels, kits.label_values, 551, space, "volume k1")
    ribs, _ = map_to_group(labels, kits.label_values, 555, space, "volume k1")
    assert (organs[0] == ignore_label(551, space)).all() and (ribs == 0).all()
    assert {(r.structure, r.origin, r.n_voxels) for r in rows} == {
        ("kidney_left", "mapped_union", 4), ("kidney_right", "mapped_union", 4)}


def test_lesion_voxels_are_ignore_and_recorded_as_lesion(demo, space):
    kits = demo["demo_kits"]
    labels = np.zeros((2, 2, 2), dtype=np.uint8)
    labels[1, 1, 1] = _value(kits, "kidney_tumor")
    out, rows = map_to_group(labels, kits.label_values, 551, space, "volume k1")
    assert out[1, 1, 1] == ignore_label(551, space) and out.sum() == ignore_label(551, space)
    assert rows == [ProvenanceRow("kidney_right", 551, "lesion", _value(kits, "kidney_tumor"), 1)]


def test_unannotated_voxels_are_ignore_in_every_group(demo, space):
    saros = demo["demo_saros"]
    labels = np.full((2, 2, 2), 255, dtype=np.uint8)
    for group in (553, 559):
        out, rows = map_to_group(labels, saros.label_values, group, space, "volume s1")
        assert (out == ignore_label(group, space)).all() and rows[0].origin == "unannotated"


def test_a_value_missing_from_the_mapping_is_an_error_naming_volume_and_value(demo, space):
    labels = np.array([[[0, 77]]], dtype=np.uint8)
    with pytest.raises(MappingError, match=r"volume demo_oar_case001.*\[77\]"):
        map_to_group(labels, demo["demo_oar"].label_values, 556, space, "volume demo_oar_case001")


def test_ignore_is_one_above_the_groups_highest_structure_id(space):
    assert ignore_label(557, space) == 10 and ignore_label(552, space) == 25


def test_combining_label_sets_prefers_exact_over_ignore_over_background(space):
    ignore = ignore_label(556, space)
    first = np.array([0, 3, ignore, 0, 5], dtype=np.uint8)
    second = np.array([ignore, 0, 2, 0, 7], dtype=np.uint8)
    assert combine_group_maps(first, second, 556, space).tolist() == [ignore, 3, 2, 0, 7]


def test_provenance_table_round_trips_sorted_by_group_and_structure(tmp_path):
    rows = [ProvenanceRow("spleen", 551, "source_gt", 1, 10), ProvenanceRow("bones", 559, "interpolated", 5, 3),
            ProvenanceRow("liver", 551, "source_gt", 4, 7)]
    write_provenance(rows, tmp_path / "p.tsv")
    assert read_provenance(tmp_path / "p.tsv") == [rows[2], rows[0], rows[1]]
    assert (tmp_path / "p.tsv").read_text().splitlines()[0] == "structure\tgroup\torigin\tsource_value\tn_voxels"
