"""Shard membership: consecutive chunks of the sorted volume ids, stable and invertible."""

import pytest

from cadsflow.pseudolabel.shards import Shards


def test_shards_are_consecutive_chunks_of_the_sorted_ids():
    shards = Shards(["e", "a", "d", "b", "c"], size=2)
    assert [shards.members(k) for k in shards.indices()] == [["a", "b"], ["c", "d"], ["e"]]


def test_membership_does_not_depend_on_sheet_order():
    assert Shards(["b", "c", "a"], 2).members(0) == Shards(["c", "a", "b"], 2).members(0)


def test_shard_of_a_volume_is_the_shard_that_lists_it():
    ids = [f"v{i:03d}" for i in range(23)]
    shards = Shards(ids, size=5)
    assert all(v in shards.members(shards.of(v)) for v in ids)
    assert len(shards) == 5


def test_unknown_volume_and_missing_shard_are_errors_that_name_them():
    shards = Shards(["a"], size=4)
    with pytest.raises(KeyError, match="zz"):
        shards.of("zz")
    with pytest.raises(IndexError, match="shard 1"):
        shards.members(1)


def test_shard_size_must_be_positive():
    with pytest.raises(ValueError, match="0"):
        Shards(["a"], size=0)
