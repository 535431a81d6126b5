"""The head groups' training subsets for the final model (Online Methods 4.1), as pure functions of label counts.

"For head-related groups, we select images containing adequate head coverage using specific criteria: predicted
brain voxel count exceeding 2,000 voxels for the brain group and at least 24 target structures for the head-and-neck
group." The rules and their constants are data (config/final.yaml, head_subsets):
- 557 (brain): `brain` of the volume's assembled group-553 map has more than 2,000 voxels (strictly: "exceeding");
- 558 (head and neck): at least 24 of group 558's structures have a voxel in the volume's assembled 558 map.
The inputs are label-count tables (cadsflow.final.counts: volume id x structure -> voxels) of the candidate volumes,
i.e. the group's non-test volumes; the result is the sorted list of volume ids that qualify.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from cadsflow.final.config import BRAIN_VOXELS_ABOVE, STRUCTURES_PRESENT_AT_LEAST, HeadSubsetRule


class SubsetError(ValueError):
    """A subset cannot be decided: a count table is missing or lacks the structure the rule counts."""


def training_subset(rule: HeadSubsetRule, counts_by_group: Mapping[int, pd.DataFrame]) -> list[str]:
    """The volumes that qualify for `rule.group`'s training set, from the count table of `rule.count_group`."""
    if rule.count_group not in counts_by_group:
        raise SubsetError(f"group {rule.group}: its subset rule counts group {rule.count_group}'s label maps, "
                          "but no count table for that group was given")
    counts = counts_by_group[rule.count_group]
    if rule.rule == BRAIN_VOXELS_ABOVE:
        return volumes_with_voxels_above(counts, rule.structure, rule.voxels)
    if rule.rule == STRUCTURES_PRESENT_AT_LEAST:
        return volumes_with_structures_present(counts, rule.structures)
    raise SubsetError(f"group {rule.group}: unknown subset rule {rule.rule!r}")


def volumes_with_voxels_above(counts: pd.DataFrame, structure: str, voxels: int) -> list[str]:
    """Volumes where `structure` has more than `voxels` voxels (557: brain in the 553 map, > 2,000)."""
    if structure not in counts.columns:
        raise SubsetError(f"the label-count table has no column {structure!r} (columns: {list(counts.columns)})")
    return sorted(str(v) for v in counts.index[counts[structure] > voxels])


def volumes_with_structures_present(counts: pd.DataFrame, structures: int) -> list[str]:
    """Volumes where at least `structures` of the table's structures have a voxel (558: >= 24 of its 29)."""
    present = (counts > 0).sum(axis=1)
    return sorted(str(v) for v in counts.index[present >= structures])
