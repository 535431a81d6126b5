# Shared lookups for all rules: the validated volume sheet and small param/resource functions.
# Everything here runs at parse time, so it must stay cheap at 22,022 volumes: one TSV read, no file scans.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from cadsflow.labels import load_label_space
from cadsflow.sheet import VOLUME_ID_PATTERN, SheetError, read_sheet
from cadsflow.sources import RegistryError, load_registry


wildcard_constraints:
    volume_id=VOLUME_ID_PATTERN,
    group=r"55[1-9]",


def project_path(path):
    """A config path as given if it exists from the working directory, else relative to the workflow."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return Path(workflow.basedir) / p


def _load_volumes():
    sheet = Path(config["sheet"])
    if config["demo"]["enabled"] and not sheet.exists():
        from cadsflow.demo import ensure_demo_cohort

        ensure_demo_cohort(config["demo"]["directory"])
    try:
        sources = load_registry(config["registry"]) if config["registry"] else {}
        volumes = read_sheet(sheet, known_sources=set(sources) if sources else None)
    except (SheetError, RegistryError) as exc:
        raise WorkflowError(str(exc)) from None
    return sources, volumes


LABEL_SPACE = load_label_space(project_path(config["label_space"]))
SOURCES, VOLUMES = _load_volumes()


def volumes_in_split(split):
    return [v for v, vol in VOLUMES.items() if vol.split == split]


def volume(volume_id):
    return VOLUMES[volume_id]


def standardized(volume_id):
    return f"results/standardized/{volume_id}"


def existing(path):
    """Declare an input only if it exists: a missing file becomes a quarantine line, not a DAG failure."""
    return [path] if path and Path(path).exists() else []


def known_label_values(volume_id):
    source = SOURCES.get(VOLUMES[volume_id].source)
    return sorted(source.known_values()) if source else None


def mem_from_inputs(base_mb, per_input_mb):
    """Memory in MB: a base plus a multiple of the (compressed) input size; doubles on each retry."""

    def mem(wildcards, input, attempt):
        return int((base_mb + per_input_mb * input.size_mb) * 2 ** (attempt - 1))

    return mem
