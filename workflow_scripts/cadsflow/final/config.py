"""config/final.yaml: the final model's oversampling rule, head-subset rules and presets, validated on load.

Everything the final stage decides by (threshold, minority classes, head-subset constants, presets, per-group epochs)
is data in that file; this module turns it into typed values and raises FinalConfigError naming the file and the key
when something is missing, unknown or malformed. The presets use config/presets.yaml's schema and are read by the
specialists' own loader (cadsflow.specialists.presets.load_preset), so both stages validate presets one way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from cadsflow.labels import GROUP_IDS, LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.specialists.presets import Preset, load_preset

FINAL_YAML = CONFIG_DIR / "final.yaml"
BELOW_THRESHOLD = "below_threshold"  # every structure with 0 < p < threshold is a minority class
NO_MINORITY = "none"  # no minority classes: uniform images, stock patch sampling
BRAIN_VOXELS_ABOVE = "brain_voxels_above"
STRUCTURES_PRESENT_AT_LEAST = "structures_present_at_least"
_SECTIONS = ("oversampling", "head_subsets", "head_subsets_by_preset", "epochs_by_group")
_RULE_KEYS = {
    BRAIN_VOXELS_ABOVE: ("rule", "count_group", "structure", "voxels"),
    STRUCTURES_PRESENT_AT_LEAST: ("rule", "count_group", "structures"),
}


class FinalConfigError(ValueError):
    """config/final.yaml is missing a key or holds a malformed value; the message names the file and the key."""


@dataclass(frozen=True)
class OversamplingRule:
    """How one group's weights are computed: the frequency threshold and which structures are minority classes."""

    threshold: float
    minority: str | tuple[str, ...]  # BELOW_THRESHOLD, NO_MINORITY or explicit structure names


@dataclass(frozen=True)
class HeadSubsetRule:
    """A head group's training subset, decided on the label-count table of `count_group`'s assembled maps."""

    group: int
    rule: str  # BRAIN_VOXELS_ABOVE or STRUCTURES_PRESENT_AT_LEAST
    count_group: int
    structure: str | None = None  # BRAIN_VOXELS_ABOVE: the structure whose voxels are counted
    voxels: int | None = None  # BRAIN_VOXELS_ABOVE: a volume needs more voxels than this
    structures: int | None = None  # STRUCTURES_PRESENT_AT_LEAST: a volume needs at least this many structures


def oversampling_rule(group: int, path: str | Path = FINAL_YAML, space: LabelSpace | None = None) -> OversamplingRule:
    """Group `group`'s threshold and minority-class choice (its own entry, else `default`)."""
    path = Path(path)
    section = _section(_read(path), "oversampling", path)
    threshold = section.get("threshold")
    if not _is_number(threshold) or not 0 < threshold <= 1:
        raise FinalConfigError(f"{path}: oversampling.threshold must be a number in (0, 1], got {threshold!r}")
    choices = section.get("minority_classes")
    if not isinstance(choices, dict) or "default" not in choices:
        raise FinalConfigError(f"{path}: oversampling.minority_classes must be a mapping with a `default` entry")
    unknown = sorted(str(k) for k in choices if k != "default" and k not in GROUP_IDS)
    if unknown:
        raise FinalConfigError(f"{path}: oversampling.minority_classes: unknown groups {unknown}; groups are "
                               f"{list(GROUP_IDS)}")
    _check_group(group, path)
    key = group if group in choices else "default"
    minority = _minority_choice(choices[key], group, f"{path}: oversampling.minority_classes.{key}", space)
    return OversamplingRule(threshold=float(threshold), minority=minority)


def head_subset_rules(path: str | Path = FINAL_YAML, space: LabelSpace | None = None,
                      preset: str | None = None) -> dict[int, HeadSubsetRule]:
    """The head groups' subset rules, by group; a group without an entry trains on all its non-test volumes.

    With `preset`, that preset's entries of `head_subsets_by_preset` replace constants of the rules (not the rule).
    """
    path = Path(path)
    table = _read(path)
    section = _section(table, "head_subsets", path)
    overrides = _preset_subset_overrides(table, preset, section, path) if preset else {}
    return {group: _subset_rule(group, {**entry, **overrides.get(group, {})}, path, space)
            for group, entry in section.items()}


EMPTY_HEAD_SUBSET_CHOICES = ("all_candidates", "fail")


def empty_head_subset(path: str | Path = FINAL_YAML) -> str:
    """What a head group does when no candidate passes its subset rule (config/final.yaml empty_head_subset)."""
    path = Path(path)
    value = _read(path).get("empty_head_subset", "fail")
    if value not in EMPTY_HEAD_SUBSET_CHOICES:
        raise ValueError(f"{path}: empty_head_subset must be one of {EMPTY_HEAD_SUBSET_CHOICES}, got {value!r}")
    return value


def load_final_preset(name: str, path: str | Path = FINAL_YAML) -> Preset:
    """The final model's preset `name`, read by the specialists' preset loader from config/final.yaml."""
    if name in _SECTIONS:
        raise FinalConfigError(f"{path}: {name!r} is a section of the file, not a preset")
    return load_preset(name, path)


def final_preset_for_group(name: str, group: int, path: str | Path = FINAL_YAML) -> Preset:
    """The preset with `epochs_by_group` applied: what group `group`'s final training runs with."""
    path = Path(path)
    preset = load_final_preset(name, path)
    _check_group(group, path)
    by_preset = _section(_read(path), "epochs_by_group", path)
    overrides = by_preset.get(name) or {}
    if not isinstance(overrides, dict):
        raise FinalConfigError(f"{path}: epochs_by_group.{name} must be a mapping group -> epochs, got {overrides!r}")
    unknown = sorted(str(k) for k in overrides if k not in GROUP_IDS)
    if unknown:
        raise FinalConfigError(f"{path}: epochs_by_group.{name}: unknown groups {unknown}")
    if group not in overrides:
        return preset
    epochs = overrides[group]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise FinalConfigError(f"{path}: epochs_by_group.{name}.{group} must be a positive integer, got {epochs!r}")
    return dataclasses.replace(preset, schedule={**preset.schedule, "epochs": epochs})


def _preset_subset_overrides(table: dict, preset: str, rules: dict, path: Path) -> dict[int, dict]:
    overrides = (table.get("head_subsets_by_preset") or {}).get(preset) or {}
    where = f"{path}: head_subsets_by_preset.{preset}"
    if not isinstance(overrides, dict):
        raise FinalConfigError(f"{where} must be a mapping group -> constants, got {overrides!r}")
    for group, entry in overrides.items():
        if group not in rules:
            raise FinalConfigError(f"{where}: group {group!r} has no rule in head_subsets")
        if not isinstance(entry, dict) or "rule" in entry:
            raise FinalConfigError(f"{where}.{group}: expected the rule's constants (not `rule`), got {entry!r}")
    return overrides


def _minority_choice(value, group: int, where: str, space: LabelSpace | None) -> str | tuple[str, ...]:
    if value in (BELOW_THRESHOLD, NO_MINORITY):
        return value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise FinalConfigError(f"{where}: expected {BELOW_THRESHOLD!r}, {NO_MINORITY!r} or a list of structure "
                               f"names, got {value!r}")
    members = (space or load_label_space()).group_label_map(group)
    foreign = [v for v in value if v not in members]
    if foreign:
        raise FinalConfigError(f"{where}: {foreign} are not structures of group {group}")
    if len(set(value)) != len(value):
        raise FinalConfigError(f"{where}: a structure is listed twice in {value}")
    return tuple(value)


def _subset_rule(group, entry, path: Path, space: LabelSpace | None) -> HeadSubsetRule:
    where = f"{path}: head_subsets.{group}"
    _check_group(group, path)
    rule = entry.get("rule") if isinstance(entry, dict) else None
    if rule not in _RULE_KEYS:
        raise FinalConfigError(f"{where}: rule must be one of {sorted(_RULE_KEYS)}, got {rule!r}")
    if sorted(entry) != sorted(_RULE_KEYS[rule]):
        raise FinalConfigError(f"{where}: rule {rule} takes exactly the keys {list(_RULE_KEYS[rule])}, "
                               f"got {sorted(entry)}")
    count_group = entry["count_group"]
    _check_group(count_group, path)
    values = {k: entry[k] for k in ("voxels", "structures") if k in entry}
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FinalConfigError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    structure = entry.get("structure")
    if structure is not None and structure not in (space or load_label_space()).group_label_map(count_group):
        raise FinalConfigError(f"{where}: {structure!r} is not a structure of group {count_group}")
    return HeadSubsetRule(group=group, rule=rule, count_group=count_group, structure=structure, **values)


def _read(path: Path) -> dict:
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FinalConfigError(f"{path}: cannot read the final-model config ({exc})") from None
    if not isinstance(table, dict):
        raise FinalConfigError(f"{path}: expected a mapping at the top level")
    return table


def _section(table: dict, name: str, path: Path) -> dict:
    if not isinstance(table.get(name), dict):
        raise FinalConfigError(f"{path}: missing section {name!r} (a mapping)")
    return table[name]


def _check_group(group, path: Path) -> None:
    if group not in GROUP_IDS:
        raise FinalConfigError(f"{path}: group {group!r} is not one of {list(GROUP_IDS)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
