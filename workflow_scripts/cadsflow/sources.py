"""The source registry: one entry per data source, as data (YAML), and the sheet built from it.

An entry says where a source's images and labels are, its body region and licence, how its label values map
onto the unified structures, and which split each case belongs to. Example:

    sources:
      kits:
        body_region: abdomen
        licence: CC-BY-NC-SA-4.0
        images: kits/imaging/{case}.nii.gz        # relative to the registry file; {case} names the case
        labels: kits/segmentation/{case}.nii.gz   # optional; cases without a label file are unlabelled
        label_values:
          1: {union: [kidney_left, kidney_right]} # the source labels both kidneys as one class
          2: {lesion_of: [kidney_left, kidney_right]}
        split: {test: [case_00003], test_fraction: 0.1}
        extra_label_sets:                          # optional: more label files per case, each its own mapping
          oar: {labels: kits/oar/{case}.nii.gz, label_values: {1: liver}}

Mapping entries: a structure name (exact), `{union: [...]}` (the value covers several unified structures),
`{lesion_of: [...]}` (a lesion inside those organs), `{unannotated: true}` (voxels nobody labelled, e.g. SAROS 255),
`{ignore: reason}` (a class with no unified counterpart). A source whose table is not known yet says
`mapping_status: todo`: using its labels is an error, never a silent guess.
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path


from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.sheet import LABEL_SET_PATTERN, MAIN_LABEL_SET, Volume, check_volume_id
from cadsflow.textio import read_yaml_mapping

MAPPING_KINDS = ("structure", "union", "lesion_of", "unannotated", "ignore")

class RegistryError(ValueError):
    """The registry is malformed; the message names the file, the source and the problem."""

@dataclass(frozen=True)
class LabelValue:
    value: int
    kind: str  # one of MAPPING_KINDS
    targets: tuple[str, ...] = ()
    note: str = ""

@dataclass(frozen=True)
class Source:
    name: str
    body_region: str
    licence: str
    images: str  # absolute pattern with {case}
    labels: str  # absolute pattern with {case}, or ''
    label_values: dict[int, LabelValue] = field(default_factory=dict)
    test_cases: frozenset[str] = frozenset()
    test_fraction: float = 0.0
    mapping_status: str = "complete"  # or "todo"
    anonymize_face: bool = False
    sparse_slices: int = 0  # >0: annotated on every n-th axial slice only (SAROS: 5)
    extra: dict = field(default_factory=dict)
    extra_labels: dict[str, str] = field(default_factory=dict)  # label set name -> absolute pattern with {case}

    def known_values(self) -> set[int]:
        return {0, *self.label_values}

    def extra_known_values(self) -> dict[str, set[int]]:
        """Per extra label set: the values its mapping knows, and 0 (what standardization accepts in its file)."""
        sets = self.extra.get("extra_label_sets") or {}
        return {
            str(name): {0, *(int(v) for v in ((entry or {}).get("label_values") or {}))}
            for name, entry in sets.items()
        }

    def require_mapping(self) -> None:
        if self.mapping_status != "complete":
            raise RegistryError(
                f"source {self.name}: its label mapping is marked '{self.mapping_status}' (TODO: transcribe the "
                "source's label table into the registry); refusing to guess"
            )

def load_registry(path: str | Path, label_space: LabelSpace | None = None) -> dict[str, Source]:
    path = Path(path)
    data = read_yaml_mapping(path, "the source registry", RegistryError)
    return parse_registry(data, path, path.resolve().parent, label_space)


def parse_registry(data: dict, path: str | Path, base: str | Path,
                   label_space: LabelSpace | None = None) -> dict[str, Source]:
    """A registry given as data (`path` names it in errors; relative patterns resolve against `base`)."""
    path = Path(path)
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise RegistryError(f"{path}: expected a mapping 'sources:' with at least one source")
    space = label_space or load_label_space()
    return {name: _parse_source(path, Path(base), name, entry or {}, space) for name, entry in entries.items()}

def _parse_source(path: Path, base: Path, name: str, entry: dict, space: LabelSpace) -> Source:
    where = f"{path}: source {name!r}: "
    check_volume_id(name, where)
    if "images" not in entry:
        raise RegistryError(f"{where}needs an 'images' pattern")
    for key in ("images", "labels"):
        if key in entry and "{case}" not in str(entry[key]):
            raise RegistryError(f"{where}'{key}' pattern must contain {{case}}")
    status = str(entry.get("mapping_status", "complete"))
    if status not in ("complete", "todo"):
        raise RegistryError(f"{where}mapping_status must be 'complete' or 'todo', not {status!r}")
    values = {
        int(v): parse_label_value(where, int(v), spec, space) for v, spec in (entry.get("label_values") or {}).items()
    }
    if 0 in values:
        raise RegistryError(f"{where}label value 0 is background and cannot be mapped")
    split = entry.get("split") or {}
    fraction = float(split.get("test_fraction", 0.0))
    if not 0.0 <= fraction <= 1.0:
        raise RegistryError(f"{where}split.test_fraction must be in [0, 1]")
    known = {"images", "labels", "body_region", "licence", "label_values", "split", "mapping_status",
             "anonymize_face", "sparse_slices"}  # anything else (extra_label_sets, table_a3, ...) stays in extra
    return Source(
        name=name,
        body_region=str(entry.get("body_region", "")),
        licence=str(entry.get("licence", "")),
        images=_absolute(base, entry["images"]),
        labels=_absolute(base, entry["labels"]) if entry.get("labels") else "",
        label_values=values,
        test_cases=frozenset(str(c) for c in split.get("test", []) or []),
        test_fraction=fraction,
        mapping_status=status,
        anonymize_face=bool(entry.get("anonymize_face", False)),
        sparse_slices=int(entry.get("sparse_slices", 0)),
        extra={k: v for k, v in entry.items() if k not in known},
        extra_labels=_extra_label_patterns(where, base, entry.get("extra_label_sets")),
    )


def _extra_label_patterns(where: str, base: Path, sets) -> dict[str, str]:
    """Each extra label set's file pattern (a second, third ... label file per case), made absolute."""
    patterns = {}
    for name, entry in (sets or {}).items():
        if not re.fullmatch(LABEL_SET_PATTERN, str(name)) or name == MAIN_LABEL_SET:
            raise RegistryError(
                f"{where}extra label set {name!r}: a set name must match {LABEL_SET_PATTERN} and not be "
                f"'{MAIN_LABEL_SET}' (it becomes the sheet column label_<set> and the file label_<set>.nii.gz)"
            )
        pattern = (entry or {}).get("labels") if isinstance(entry, dict) else None
        if not pattern:
            continue  # a set the factory makes itself (no file of the source)
        if "{case}" not in str(pattern):
            raise RegistryError(f"{where}extra label set {name!r}: 'labels' pattern must contain {{case}}")
        patterns[str(name)] = _absolute(base, pattern)
    return patterns


def label_files(source: Source, case: str) -> dict[str, str]:
    """Every label file of one case that exists: {"main": ..., <extra set name>: ...}.

    A source may carry several label files per case (VISCERAL Gold Corpus: the main 20 structures and the CADS
    team's 22 radiotherapy structures); each is standardized as label.nii.gz / label_<set>.nii.gz and scored
    with its own mapping.
    """
    return {name: path for name, path in _planned_label_files(source, case).items() if Path(path).exists()}

def parse_label_value(where: str, value: int, spec, space: LabelSpace) -> LabelValue:
    if isinstance(spec, str):
        kind, targets, note = "structure", (spec,), ""
    elif isinstance(spec, dict) and len(spec) >= 1:
        kind = next((k for k in ("union", "lesion_of", "unannotated", "ignore") if k in spec), None)
        if kind is None:
            raise RegistryError(f"{where}label value {value}: unknown mapping {spec!r}; expected one of {MAPPING_KINDS}")
        raw = spec[kind]
        targets = tuple(raw) if kind in ("union", "lesion_of") else ()
        note = str(spec.get("name", raw if kind == "ignore" else ""))
        if kind in ("union", "lesion_of") and len(targets) < 1:
            raise RegistryError(f"{where}label value {value}: '{kind}' needs a list of structures")
    else:
        raise RegistryError(f"{where}label value {value}: cannot read mapping {spec!r}")
    for target in targets:
        try:
            space.by_name(target)
        except KeyError:
            raise RegistryError(f"{where}label value {value}: {target!r} is not a unified structure name") from None
    return LabelValue(value=value, kind=kind, targets=targets, note=note)

def _absolute(base: Path, pattern: str) -> str:
    p = Path(str(pattern))
    return str(p if p.is_absolute() else base / p)

def discover_volumes(sources: dict[str, Source], cases: dict[str, list[str]] | None = None) -> list[Volume]:
    """Expand each source's image pattern into volumes; ids are '<source>_<case>'.

    A case's label files are its main label (`label`) and one file per extra label set (`extra_labels`), each
    only where it exists (label_files). `cases` (source -> case names) names the cases instead of listing the
    files: the volumes of a cohort that is still to be written (the demo's, planned before any file exists);
    their label files are taken as present. The split follows the main label.
    """
    volumes: list[Volume] = []
    for source in sources.values():
        listed = _cases(source.images) if cases is None else [
            (case, source.images.format(case=case)) for case in cases.get(source.name, [])]
        for case, image in listed:
            files = label_files(source, case) if cases is None else _planned_label_files(source, case)
            label = files.pop(MAIN_LABEL_SET, "")
            volume_id = check_volume_id(f"{source.name}_{case}", f"source {source.name}: ")
            volumes.append(
                Volume(volume_id, source.name, image, label, _split_for(source, case, bool(label)), source.body_region,
                       extra_labels=files)
            )
    return volumes


def _planned_label_files(source: Source, case: str) -> dict[str, str]:
    """Every label file pattern of the source filled in for one case, whether the file exists or not."""
    patterns = {MAIN_LABEL_SET: source.labels, **source.extra_labels} if source.labels else dict(source.extra_labels)
    return {name: pattern.format(case=case) for name, pattern in patterns.items()}

def _cases(pattern: str) -> list[tuple[str, str]]:
    prefix, suffix = pattern.split("{case}", 1)
    matcher = re.compile(re.escape(prefix) + r"(?P<case>[^/]+?)" + re.escape(suffix.rstrip("/")) + r"/?$")
    found = []
    for path in sorted(glob.glob(glob.escape(prefix) + "*" + glob.escape(suffix))):
        match = matcher.match(path)
        if match:
            found.append((match["case"], path.rstrip("/")))
    return found

def _split_for(source: Source, case: str, labelled: bool) -> str:
    if case in source.test_cases or (source.test_fraction and _unit_hash(f"{source.name}/{case}") < source.test_fraction):
        return "test" if labelled else "train_unlabelled"
    return "train_gt" if labelled else "train_unlabelled"

def _unit_hash(text: str) -> float:
    """Deterministic in [0, 1): a split that does not change when cases are added or reordered."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / float(1 << 48)
