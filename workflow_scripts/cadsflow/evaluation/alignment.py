"""Dataset label alignment for evaluation (Online Methods 5.2), read from config/evaluation_alignment.yaml.

A source is scored on classes: each class is a set of the source's reference label values and a set of unified
structures whose predicted voxels form it. That one form covers the paper's cases as data: merged predictions
(kidneys, lungs from lobes), lesions merged into organs (KiTS, LiTS), references already in the unified space,
annotated slices only (SAROS) and excluded cases (VerSe with L6 or T13). See the YAML file for the format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR

ALIGNMENT_YAML = CONFIG_DIR / "evaluation_alignment.yaml"
UNIFIED = "unified"
FROM_REGISTRY = "from_registry"


class AlignmentError(ValueError):
    """The alignment file or a source's alignment is unusable; the message names the file, source and problem."""


@dataclass(frozen=True)
class EvaluationClass:
    name: str
    reference_values: tuple[int, ...]
    prediction_structures: tuple[str, ...]


@dataclass(frozen=True)
class SourceAlignment:
    source: str
    classes: tuple[EvaluationClass, ...]
    unannotated_value: int | None = None
    slice_axis: int = 2
    exclude_cases_with_values: tuple[int, ...] = ()

    def class_spec(self, label_space: LabelSpace) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """class name -> (reference values, predicted global ids), as metrics.score_label_maps takes it."""
        return {
            c.name: (c.reference_values, tuple(label_space.by_name(s).global_id for s in c.prediction_structures))
            for c in self.classes
        }

    def restricted_to(self, structures) -> SourceAlignment:
        """Only the classes whose predicted structures all lie in `structures` (e.g. what a baseline covers)."""
        keep = set(structures)
        classes = tuple(c for c in self.classes if set(c.prediction_structures) <= keep)
        return SourceAlignment(
            self.source, classes, self.unannotated_value, self.slice_axis, self.exclude_cases_with_values
        )


@dataclass(frozen=True)
class AlignmentConfig:
    path: str
    defaults: dict = field(default_factory=dict)
    unknown_sources: str = UNIFIED
    sources: dict = field(default_factory=dict)


def load_alignment(path: str | Path = ALIGNMENT_YAML) -> AlignmentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise AlignmentError(f"{path}: alignment file not found") from None
    except yaml.YAMLError as exc:
        raise AlignmentError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data.get("sources", {}), dict):
        raise AlignmentError(f"{path}: 'sources' must be a mapping of source name -> alignment")
    unknown = str(data.get("unknown_sources", UNIFIED))
    if unknown not in (UNIFIED, "error"):
        raise AlignmentError(f"{path}: unknown_sources must be 'unified' or 'error', not {unknown!r}")
    return AlignmentConfig(str(path), dict(data.get("defaults") or {}), unknown, dict(data.get("sources") or {}))


def resolve_alignment(
    source: str,
    config: AlignmentConfig | None = None,
    registry: Mapping | None = None,
    label_space: LabelSpace | None = None,
) -> SourceAlignment:
    """The classes and rules one source is scored with: its entry in the file, else its registry entry."""
    config = config or load_alignment()
    space = label_space or load_label_space()
    where = f"{config.path}: source {source!r}: "
    entry = config.sources.get(source)
    if entry is None:
        if registry is not None and source in registry:
            entry = {"classes": config.defaults.get("classes", FROM_REGISTRY)}
        elif config.unknown_sources == UNIFIED:
            entry = {"classes": UNIFIED}
        else:
            raise AlignmentError(f"{where}not in the alignment file nor in the source registry")
    entry = {**{k: v for k, v in config.defaults.items() if k != "classes"}, **entry}
    spec = entry.get("classes", config.defaults.get("classes", FROM_REGISTRY))
    unannotated = entry.get("unannotated_value")

    if spec == UNIFIED:
        classes = tuple(EvaluationClass(s.name, (s.global_id,), (s.name,)) for s in space.structures)
    elif spec == FROM_REGISTRY:
        if registry is None or source not in registry:
            raise AlignmentError(f"{where}classes come from the source registry, but the registry has no {source!r}")
        merge_lesions = bool(entry.get("merge_lesions", True))
        classes, registry_unannotated = _classes_from_registry(where, registry[source], merge_lesions)
        unannotated = unannotated if unannotated is not None else registry_unannotated
    elif isinstance(spec, dict):
        classes = tuple(_parse_class(where, name, c) for name, c in spec.items())
    else:
        raise AlignmentError(f"{where}classes must be 'unified', 'from_registry' or a mapping, not {spec!r}")

    _check_classes(where, classes, space)
    return SourceAlignment(
        source=source,
        classes=classes,
        unannotated_value=None if unannotated is None else int(unannotated),
        slice_axis=int(entry.get("slice_axis", 2)),
        exclude_cases_with_values=tuple(int(v) for v in entry.get("exclude_cases_with_values", []) or []),
    )


def annotated_slices(reference: np.ndarray, alignment: SourceAlignment) -> np.ndarray | None:
    """Indices of the slices (along slice_axis) that hold no unannotated voxel, or None when all are used."""
    if alignment.unannotated_value is None:
        return None
    axis = alignment.slice_axis
    other = tuple(a for a in range(reference.ndim) if a != axis)
    unannotated = np.any(reference == alignment.unannotated_value, axis=other)
    return np.flatnonzero(~unannotated)


def restrict_to_slices(arrays, slices: np.ndarray, axis: int, spacing) -> tuple[list[np.ndarray], tuple[float, ...]]:
    """Stack the chosen slices of each array into a sparse volume.

    The slice spacing becomes the median gap between chosen slices times the original spacing, so that volumes
    (for the false-negative rules) and surface distances keep their physical scale.
    """
    if len(slices) == 0:
        raise AlignmentError("no annotated slice in the reference: nothing to score")
    gap = float(np.median(np.diff(slices))) if len(slices) > 1 else 1.0
    spacing = list(float(s) for s in spacing)
    spacing[axis] *= gap
    return [np.take(a, slices, axis=axis) for a in arrays], tuple(spacing)


# -- helpers ---------------------------------------------------------------------------------------------------


def _parse_class(where: str, name: str, spec) -> EvaluationClass:
    if not isinstance(spec, dict) or "reference" not in spec or "prediction" not in spec:
        raise AlignmentError(f"{where}class {name!r} needs 'reference' (label values) and 'prediction' (structures)")
    try:
        values = tuple(int(v) for v in spec["reference"])
    except (TypeError, ValueError):
        raise AlignmentError(f"{where}class {name!r}: reference must be a list of label values") from None
    structures = tuple(str(s) for s in spec["prediction"])
    return EvaluationClass(str(name), values, structures)


def _classes_from_registry(where: str, source, merge_lesions: bool) -> tuple[tuple[EvaluationClass, ...], int | None]:
    classes: list[list] = []  # [name, values, structures]
    lesions = []
    unannotated = None
    for value, mapping in sorted(source.label_values.items()):
        if mapping.kind == "structure":
            classes.append([mapping.targets[0], [value], mapping.targets])
        elif mapping.kind == "union":
            classes.append([mapping.note or "+".join(mapping.targets), [value], mapping.targets])
        elif mapping.kind == "lesion_of":
            lesions.append(mapping)
        elif mapping.kind == "unannotated":
            unannotated = value
    if merge_lesions:
        for lesion in lesions:
            holder = next((c for c in classes if set(lesion.targets) & set(c[2])), None)
            if holder is None:
                raise AlignmentError(
                    f"{where}lesion value {lesion.value} lies in {list(lesion.targets)}, which no class of the "
                    "source covers; cannot merge it into its organ"
                )
            holder[1].append(lesion.value)
    return tuple(EvaluationClass(n, tuple(v), tuple(s)) for n, v, s in classes), unannotated


def _check_classes(where: str, classes: tuple[EvaluationClass, ...], space: LabelSpace) -> None:
    if not classes:
        raise AlignmentError(f"{where}no class to score")
    seen_values: dict[int, str] = {}
    names = set()
    for c in classes:
        if c.name in names:
            raise AlignmentError(f"{where}class {c.name!r} is defined twice")
        names.add(c.name)
        if not c.reference_values or not c.prediction_structures:
            raise AlignmentError(f"{where}class {c.name!r} needs at least one reference value and one structure")
        for v in c.reference_values:
            if v <= 0:
                raise AlignmentError(f"{where}class {c.name!r}: reference value {v} must be positive")
            if v in seen_values:
                raise AlignmentError(f"{where}reference value {v} is in classes {seen_values[v]!r} and {c.name!r}")
            seen_values[v] = c.name
        for s in c.prediction_structures:
            try:
                space.by_name(s)
            except KeyError:
                raise AlignmentError(f"{where}class {c.name!r}: {s!r} is not a unified structure name") from None
    predicted = [s for c in classes for s in c.prediction_structures]
    twice = sorted({s for s in predicted if predicted.count(s) > 1})
    if twice:
        raise AlignmentError(f"{where}structures {twice} are predicted into more than one class")
