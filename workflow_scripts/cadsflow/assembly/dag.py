"""What the assembly rules hand to `python -m cadsflow.assembly`, built from the DAG's lookups (rules/assembly*.smk).

Pure functions of ids and lookup callables, so the lookups file stays a thin layer and the command lines are
unit-tested against the CLI's own parser (tests/test_assembly_dag.py):
- the flavor prediction jobs' folders a batch job reads (one per group and job, not one per volume: declared
  directory outputs of flavor_validate / flavor_predict, cadsflow.layout);
- `--flavor-dir GROUP NAME DIR` for every group, flavor and such folder (DIR = <job folder>/<flavor>);
- the nnU-Net dataset.json files whose numTraining fills the card's Table A.4, and their `--dataset-json` words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

SPECIALISTS = "specialists"  # card.STAGES' stage names: the specialists, each flavor by its name, the final model
FINAL = "final"


def prediction_dirs(volume_ids: Iterable[str], groups: Sequence[int],
                    dir_of: Callable[[int, str], str]) -> list[str]:
    """The distinct folders of the jobs that write the volumes' flavor predictions of every group (sorted)."""
    return sorted({str(dir_of(group, volume_id)) for volume_id in volume_ids for group in groups})


def flavor_dir_args(volume_ids: Sequence[str], groups: Sequence[int], flavors: Sequence[str],
                    dir_of: Callable[[int, str], str]) -> list[str]:
    """`--flavor-dir GROUP NAME DIR` words for every group, flavor and prediction job folder holding some of the
    volumes (DIR = <job folder>/<flavor>; the CLI reads only the selected flavors' folders)."""
    words: list[str] = []
    for group in groups:
        folders = sorted({str(dir_of(group, v)) for v in volume_ids})
        for flavor in flavors:
            for folder in folders:
                words += ["--flavor-dir", str(group), flavor, f"{folder}/{flavor}"]
    return words


def training_datasets(
    groups: Sequence[int],
    flavors: Sequence[str],
    specialist_json: Callable[[int], str],
    flavor_json: Callable[[int, str], str],
    final_json: Callable[[int], str] | None,
) -> list[tuple[str, int, str]]:
    """(stage, group, dataset.json) for Table A.4: the specialists', each flavor's and the final model's dataset
    of every group, in the card's stage order (no final entries without `final_json`)."""
    entries = [(SPECIALISTS, g, str(specialist_json(g))) for g in groups]
    entries += [(flavor, g, str(flavor_json(g, flavor))) for flavor in flavors for g in groups]
    if final_json is not None:
        entries += [(FINAL, g, str(final_json(g))) for g in groups]
    return entries


def dataset_json_args(entries: Iterable[tuple[str, int, str]]) -> list[str]:
    """`--dataset-json STAGE GROUP PATH` words for the card command."""
    words: list[str] = []
    for stage, group, path in entries:
        words += ["--dataset-json", stage, str(group), str(path)]
    return words
