"""Dataset label alignment for evaluation (Online Methods 5.2), read from config/evaluation_alignment.yaml.

A source is scored on classes: each class is a set of the source's reference label values and a set of unified
structures whose predicted voxels form it. That one form covers the paper's cases as data: merged predictions
(kidneys, lungs from lobes), lesions merged into organs (KiTS, LiTS), references already in the unified space,
annotated slices only (SAROS), excluded cases (VerSe with L6 or T13, and the authors' list of transitional
cases), classes left out (HaN-Seg's incomplete spinal cord) and references in one group's label ids (the factory's
own atlas labels of HaN-Seg). See the YAML file for the format.

A source with more than one label file per case is scored once per label set: the set's alignment key is
"<source>:<set>" (an entry in the file, else the registry's `extra_label_sets.<set>.label_values`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.textio import read_yaml_mapping

ALIGNMENT_YAML = CONFIG_DIR / "evaluation_alignment.yaml"
UNIFIED = "unified"
FROM_REGISTRY = "from_registry"
GROUP_PREFIX = "group:"  # classes: "group:557" -> the reference holds group 557's label ids
LABEL_SET_SEPARATOR = ":"  # "<source>:<set>" names an extra label set of a source


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
    exclude_cases: frozenset[str] = frozenset()  # case ids (or volume ids) not scored at all
    strip_slices_for_groups: tuple[int, ...] | None = None  # None: every class is scored on annotated slices only

    def excludes_case(self, volume_id: str) -> bool:
        """Whether the case is on the exclusion list (by case id, or by volume id '<source>_<case>')."""
        base = self.source.split(LABEL_SET_SEPARATOR, 1)[0]
        return volume_id in self.exclude_cases or any(volume_id == f"{base}_{c}" for c in self.exclude_cases)

    def strips_slices_for(self, group: int | None) -> bool:
        """Whether a class predicted by `group` is scored on the annotated slices only."""
        if self.unannotated_value is None:
            return False
        return self.strip_slices_for_groups is None or group is None or group in self.strip_slices_for_groups

    def class_spec(self, label_space: LabelSpace) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """class name -> (reference values, predicted global ids), as metrics.score_label_maps takes it."""
        return {
            c.name: (c.reference_values, tuple(label_space.by_name(s).global_id for s in c.prediction_structures))
            for c in self.classes
        }

    def restricted_to(self, structures) -> SourceAlignment:
        """Only the classes whose predicted structures all lie in `structures` (e.g. what a baseline covers)."""
        keep = set(structures)
        return replace(self, classes=tuple(c for c in self.classes if set(c.prediction_structures) <= keep))


@dataclass(frozen=True)
class AlignmentConfig:
    path: str
    defaults: dict = field(default_factory=dict)
    unknown_sources: str = UNIFIED
    sources: dict = field(default_factory=dict)


def load_alignment(path: str | Path = ALIGNMENT_YAML) -> AlignmentConfig:
    path = Path(path)
    data = read_yaml_mapping(path, "the evaluation alignment file", AlignmentError)
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
    """The classes and rules one source (or "<source>:<set>") is scored with: its entry in the file, else its
    registry entry."""
    config = config or load_alignment()
    space = label_space or load_label_space()
    where = f"{config.path}: source {source!r}: "
    entry = config.sources.get(source)
    registry_values = _registry_label_values(source, registry, space)
    if entry is None:
        if registry_values is not None:
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
    elif isinstance(spec, str) and spec.startswith(GROUP_PREFIX):
        classes = _group_classes(where, spec, space)
    elif spec == FROM_REGISTRY:
        if registry_values is None:
            raise AlignmentError(f"{where}classes come from the source registry, but the registry has no {source!r}")
        merge_lesions = bool(entry.get("merge_lesions", True))
        classes, registry_unannotated = _classes_from_registry(where, registry_values, merge_lesions)
        unannotated = unannotated if unannotated is not None else registry_unannotated
    elif isinstance(spec, dict):
        classes = tuple(_parse_class(where, name, c) for name, c in spec.items())
    else:
        raise AlignmentError(
            f"{where}classes must be 'unified', 'from_registry', 'group:<id>' or a mapping, not {spec!r}"
        )
    classes = _without_excluded_classes(where, classes, entry.get("exclude_classes") or [])

    _check_classes(where, classes, space)
    strip_groups = entry.get("strip_slices_for_groups")
    return SourceAlignment(
        source=source,
        classes=classes,
        unannotated_value=None if unannotated is None else int(unannotated),
        slice_axis=int(entry.get("slice_axis", 2)),
        exclude_cases_with_values=tuple(int(v) for v in entry.get("exclude_cases_with_values", []) or []),
        exclude_cases=frozenset(str(c) for c in entry.get("exclude_cases", []) or []),
        strip_slices_for_groups=None if strip_groups is None else tuple(int(g) for g in strip_groups),
    )


def annotated_slices(reference: np.ndarray, alignment: SourceAlignment) -> np.ndarray | None:
    """Indices of the slices (along slice_axis) that are not entirely unannotated, or None when all are used.

    As the authors' postprocessing_for_eval.py (remove_no_label_slides_gt): only slices whose every voxel is the
    unannotated value are dropped; unannotated voxels left in a kept slice count as background of every class.
    """
    if alignment.unannotated_value is None:
        return None
    axis = alignment.slice_axis
    other = tuple(a for a in range(reference.ndim) if a != axis)
    all_unannotated = np.all(reference == alignment.unannotated_value, axis=other)
    return np.flatnonzero(~all_unannotated)


def restrict_to_slices(arrays, slices: np.ndarray, axis: int, spacing) -> tuple[list[np.ndarray], tuple[float, ...]]:
    """Stack the chosen slices of each array into one volume, keeping the original spacing (as the authors'
    evaluation does: np.delete of the unannotated slices, metrics at the image's zooms)."""
    if len(slices) == 0:
        raise AlignmentError("no annotated slice in the reference: nothing to score")
    return [np.take(a, slices, axis=axis) for a in arrays], tuple(float(s) for s in spacing)


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


def _registry_label_values(source: str, registry: Mapping | None, space: LabelSpace) -> dict | None:
    """The label values of a registry source, or of one of its extra label sets ("<source>:<set>")."""
    if registry is None:
        return None
    name, _, label_set = source.partition(LABEL_SET_SEPARATOR)
    if name not in registry:
        return None
    if not label_set:
        return registry[name].label_values
    from cadsflow.gt.mapping import label_sets

    sets = label_sets(registry[name], space)
    return sets[label_set].label_values if label_set in sets else None


def _group_classes(where: str, spec: str, space: LabelSpace) -> tuple[EvaluationClass, ...]:
    try:
        group = int(spec[len(GROUP_PREFIX):])
        structures = space.group(group)
    except (ValueError, KeyError):
        raise AlignmentError(f"{where}classes {spec!r}: {spec[len(GROUP_PREFIX):]!r} is not a group id") from None
    return tuple(EvaluationClass(s.name, (s.label_id,), (s.name,)) for s in structures)


def _without_excluded_classes(where: str, classes, names) -> tuple[EvaluationClass, ...]:
    unknown = sorted(set(names) - {c.name for c in classes})
    if unknown:
        raise AlignmentError(f"{where}exclude_classes names {unknown}, which are not classes of the source")
    return tuple(c for c in classes if c.name not in set(names))


def _classes_from_registry(where: str, label_values: dict, merge_lesions: bool):
    classes: list[list] = []  # [name, values, structures]
    lesions = []
    unannotated = None
    for value, mapping in sorted(label_values.items()):
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
