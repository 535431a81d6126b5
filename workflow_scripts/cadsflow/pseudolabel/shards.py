"""Shards: consecutive chunks of the sorted volume ids of the sheet, so membership is stable and cheap to compute.

Every volume of the sheet is in a shard, whether standardization later accepts or quarantines it: the DAG is
built before any volume is read. A quarantined volume is reported in its shard, not predicted.
"""

from __future__ import annotations

from collections.abc import Iterable


class Shards:
    """Shard k holds ids[k * size:(k + 1) * size] of the sorted ids."""

    def __init__(self, volume_ids: Iterable[str], size: int):
        if size < 1:
            raise ValueError(f"shard size must be a positive integer, got {size!r}")
        self.size = size
        self.ids = sorted(volume_ids)
        self._index = {volume_id: i for i, volume_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return -(-len(self.ids) // self.size)

    def indices(self) -> list[int]:
        return list(range(len(self)))

    def members(self, k: int) -> list[str]:
        if not 0 <= k < len(self):
            raise IndexError(f"shard {k} does not exist: there are {len(self)} shards of {self.size} volumes")
        return self.ids[k * self.size:(k + 1) * self.size]

    def of(self, volume_id: str) -> int:
        try:
            return self._index[volume_id] // self.size
        except KeyError:
            raise KeyError(f"volume {volume_id!r} is not in the sheet") from None


def ok_volumes(report_path) -> list[str]:
    """The volumes a shard report (TSV: volume_id, status, reason) says were pseudo-labelled ("ok"), in its order.

    Read without the inference code (no torch), so a CPU stage can follow the shards.
    """
    import csv

    with open(report_path, newline="") as handle:
        return [row["volume_id"] for row in csv.DictReader(handle, delimiter="\t") if row["status"] == "ok"]
