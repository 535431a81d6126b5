"""Which trained model cads-predict runs for each group, found by path in a factory run's results.

A factory run leaves one training marker per group (JSON naming the nnU-Net model folder and fold, written by
cadsflow.specialists.train): the specialists' under `<results>/specialists/models/<G>.done`, the final models'
(Online Methods 4.1) under `<results>/final/models/<G>.done`. For each group the final model is taken when its marker
exists, else the specialist. `--models` may also name a folder that holds the markers itself.

A group without a model is an error that names the group and every place looked at; nothing is ever downloaded.
A model whose nnU-Net dataset.json does not list exactly the group's label ids and names (config/structures.tsv) is
refused too: its label values would be read as the wrong structures.

Groups depend on each other (Online Methods 3.1 and the authors' inference, murong-xu/CADS utils/inference.py):
the head groups 557 and 558 are gated and centred by group 553's brain, and 558 falls back to the neck above group
552's upper vertebrae when no brain is found. The dependencies are data (DEPENDENCIES) and decide the run order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cadsflow.labels import GROUP_IDS, LabelSpace, load_label_space
from cadsflow.paths import PROJECT_ROOT
from cadsflow.pseudolabel.postprocess import BRAIN_GROUP, VERTEBRAE_GROUP
from cadsflow.specialists.train import CHECKPOINT_NAME, TrainingError, read_marker

FINAL, SPECIALIST = "final", "specialist"
# Where a factory run's markers lie under its results folder, in order of preference.
MARKER_FOLDERS = ((FINAL, Path("final") / "models"), (SPECIALIST, Path("specialists") / "models"))
DEFAULT_MODELS_DIR = PROJECT_ROOT / "results"  # where a factory run in this checkout leaves its results
# group -> groups whose predictions it needs: 553's brain gates and centres both head groups (Online Methods 3.1);
# 558 without a brain keeps the neck above group 552's upper vertebrae (authors' postprocess_head_and_neck).
DEPENDENCIES = {557: (BRAIN_GROUP,), 558: (BRAIN_GROUP, VERTEBRAE_GROUP)}
DATASET_JSON_EXTRA_LABELS = ("background", "ignore")  # nnU-Net labels that are no structure


class ModelNotFoundError(FileNotFoundError):
    """A group's model is missing or unusable; the message names the group and the paths looked at."""


@dataclass(frozen=True)
class GroupModel:
    group: int
    kind: str  # FINAL or SPECIALIST
    marker: Path
    model_dir: Path
    fold: str
    checkpoint_name: str

    @property
    def checkpoint(self) -> Path:
        return self.model_dir / f"fold_{self.fold}" / self.checkpoint_name


def parse_groups(text: str | None) -> tuple[int, ...]:
    """'551,553' -> (551, 553); None or '' -> every group. Raise ValueError naming an unknown group."""
    if not text:
        return GROUP_IDS
    try:
        groups = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"--groups must be comma-separated group ids such as 551,553, got {text!r}") from None
    unknown = [g for g in groups if g not in GROUP_IDS]
    if unknown or not groups:
        raise ValueError(f"--groups: unknown group(s) {unknown or text!r}; groups are {', '.join(map(str, GROUP_IDS))}")
    return groups


def required_groups(groups) -> tuple[int, ...]:
    """The requested groups plus every group they depend on (transitively), ascending."""
    needed = set(groups)
    pending = list(groups)
    while pending:
        for dependency in DEPENDENCIES.get(pending.pop(), ()):
            if dependency not in needed:
                needed.add(dependency)
                pending.append(dependency)
    return tuple(sorted(needed))


def run_order(groups) -> tuple[int, ...]:
    """`groups` ordered so that each comes after the groups it depends on; ties in ascending order (553 first)."""
    remaining, ordered = sorted(set(groups)), []
    while remaining:
        ready = [g for g in remaining if all(d in ordered or d not in remaining for d in DEPENDENCIES.get(g, ()))]
        ordered.append(min(ready, key=lambda g: (g != BRAIN_GROUP, g)))  # 553 gates the head groups: first
        remaining.remove(ordered[-1])
    return tuple(ordered)


def find_models(models_dir: str | Path, groups, space: LabelSpace | None = None) -> dict[int, GroupModel]:
    """The model of each group in `groups` and of every group they depend on; raise ModelNotFoundError naming the
    first group without a usable model."""
    space = space or load_label_space()
    return {group: find_model(models_dir, group, space) for group in required_groups(groups)}


def find_model(models_dir: str | Path, group: int, space: LabelSpace | None = None) -> GroupModel:
    """The final model of `group` if its marker exists under `models_dir`, else the specialist; checked usable."""
    models_dir = Path(models_dir)
    candidates = [(kind, models_dir / folder / f"{group}.done") for kind, folder in MARKER_FOLDERS]
    candidates.append((SPECIALIST, models_dir / f"{group}.done"))  # --models naming a folder of markers
    for kind, marker in candidates:
        if marker.is_file():
            model = _from_marker(group, kind, marker)
            _check_usable(model, space or load_label_space())
            return model
    looked = ", ".join(str(marker) for _, marker in candidates)
    raise ModelNotFoundError(
        f"group {group}: no trained model (looked for {looked}); train it with the factory or point --models at a "
        "run's results folder; cads-predict never downloads models"
    )


def _from_marker(group: int, kind: str, marker: Path) -> GroupModel:
    try:
        record = read_marker(marker)
    except TrainingError as exc:
        raise ModelNotFoundError(f"group {group}: {exc}") from None
    checkpoint_name = Path(record.get("checkpoint") or CHECKPOINT_NAME).name
    return GroupModel(group, kind, marker, Path(record["model_dir"]), str(record["fold"]), checkpoint_name)


def _check_usable(model: GroupModel, space: LabelSpace) -> None:
    if not model.checkpoint.is_file():
        raise ModelNotFoundError(f"group {model.group}: {model.marker} names {model.checkpoint}, which does not exist")
    dataset_json = model.model_dir / "dataset.json"
    try:
        labels = json.loads(dataset_json.read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"group {model.group}: cannot read the labels of {dataset_json} ({exc})") from None
    structures = {name: value for name, value in labels.items() if name not in DATASET_JSON_EXTRA_LABELS}
    expected = space.group_label_map(model.group)
    if structures != expected:
        wrong = sorted(set(structures.items()) ^ set(expected.items()), key=str)[:5]
        raise ModelNotFoundError(
            f"group {model.group}: {dataset_json} does not list the group's label ids of config/structures.tsv "
            f"(first differences: {wrong}); is it the model of another group?"
        )
