"""Serially repeating structures as merge blocks (Online Methods 5.2), read as data from config/assembly.yaml.

The label assembly takes cervical, thoracic and lumbar vertebrae each as one unit and all ribs as one unit, so
that neighbouring vertebrae or ribs never come from different flavors (no label conflicts at their junctions).
Which structures a block holds is a name pattern over config/structures.tsv, not a list in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.textio import read_yaml_mapping

ASSEMBLY_YAML = CONFIG_DIR / "assembly.yaml"
FLAVORS_YAML = CONFIG_DIR / "flavors.yaml"  # the flavors stage's config: its `flavors` list names them


class AssemblyConfigError(ValueError):
    """config/assembly.yaml is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Block:
    """Structures of one group merged as one unit from a single flavor."""

    name: str
    group: int
    structures: tuple[str, ...]


def load_blocks(path: str | Path = ASSEMBLY_YAML, space: LabelSpace | None = None) -> tuple[Block, ...]:
    """Every block of the config, its structures resolved from the label space (in label-space order)."""
    path = Path(path)
    space = space or load_label_space()
    entries = read_assembly_config(path).get("blocks") or {}
    if not isinstance(entries, dict):
        raise AssemblyConfigError(f"{path}: `blocks` must be a mapping of block name -> {{group, pattern}}")
    blocks = tuple(_resolve_block(path, name, entry, space) for name, entry in entries.items())
    _check_disjoint(path, blocks)
    return blocks


def blocks_of_group(blocks: tuple[Block, ...], group: int) -> tuple[Block, ...]:
    return tuple(b for b in blocks if b.group == group)


def load_flavors(path: str | Path = ASSEMBLY_YAML) -> tuple[str, ...]:
    """The flavor names in tie-break order (the first listed wins a tie): the assembly config's `flavors`, else
    the `flavors` list of config/flavors.yaml (the flavors stage's own list, so the names are defined once)."""
    path = Path(path)
    flavors = read_assembly_config(path).get("flavors")
    if flavors is None:
        path = FLAVORS_YAML
        flavors = read_assembly_config(path).get("flavors")
    if not isinstance(flavors, list) or not flavors or not all(isinstance(f, str) and f for f in flavors):
        raise AssemblyConfigError(f"{path}: `flavors` must be a non-empty list of flavor names, got {flavors!r}")
    if len(set(flavors)) != len(flavors):
        raise AssemblyConfigError(f"{path}: `flavors` lists a flavor twice: {flavors}")
    return tuple(flavors)


def read_assembly_config(path: str | Path = ASSEMBLY_YAML) -> dict:
    return read_yaml_mapping(path, "the assembly config", AssemblyConfigError)


def structures_matching(space: LabelSpace, group: int, pattern: str) -> tuple[str, ...]:
    """Names of `group` that match `pattern` in full, in label-space order."""
    regex = re.compile(pattern)
    return tuple(s.name for s in space.group(group) if regex.fullmatch(s.name))


def _resolve_block(path: Path, name: str, entry, space: LabelSpace) -> Block:
    if not isinstance(entry, dict) or set(entry) != {"group", "pattern"}:
        raise AssemblyConfigError(f"{path}: block {name!r}: expected {{group: G, pattern: REGEX}}, got {entry!r}")
    try:
        group = int(entry["group"])
        members = structures_matching(space, group, str(entry["pattern"]))
    except KeyError as exc:
        raise AssemblyConfigError(f"{path}: block {name!r}: {exc.args[0]}") from None
    except (TypeError, ValueError, re.error) as exc:
        raise AssemblyConfigError(f"{path}: block {name!r}: {exc}") from None
    if not members:
        raise AssemblyConfigError(f"{path}: block {name!r}: pattern {entry['pattern']!r} matches no structure "
                                  f"of group {group}")
    return Block(name=name, group=group, structures=members)


def _check_disjoint(path: Path, blocks: tuple[Block, ...]) -> None:
    seen: dict[str, str] = {}
    for block in blocks:
        for structure in block.structures:
            if structure in seen:
                raise AssemblyConfigError(f"{path}: structure {structure!r} is in blocks {seen[structure]!r} "
                                          f"and {block.name!r}; a structure belongs to at most one block")
            seen[structure] = block.name
