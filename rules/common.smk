# What every stage shares: the validated config, the volume sheet (or the planned demo cohort), the batches, and
# small resource functions. Each stage's own lookups are in rules/<stage>_lookups.smk, included at the top of its
# rules file (rule files hold rules only, as `snakemake --lint` asks). The Snakefile includes stages in DAG order.
# Everything here runs at parse time, so it must stay cheap at 22,022 volumes: one TSV read, no file scans.

import os
import shlex
import sys
from pathlib import Path

WORKFLOW_CODE = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, WORKFLOW_CODE)
# Scheduling priority of the jobs that gate long chains (standardization gates everything; shape QC gates the Shape
# flavor; the atlas batch's ground truth gates every flavor dataset): when more jobs are ready than cores, Snakemake
# starts these first. Measured on the demo (2 cores): started last, they left one core idle for ~40 s (the last
# batch's ground truth, run alone: 10 s). Order only; a cluster submits all ready jobs.
GATING_PRIORITY = 10

from cadsflow.labels import load_label_space
from cadsflow.sheet import VOLUME_ID_PATTERN, SheetError, make_batches, read_sheet
from cadsflow.sources import RegistryError, load_registry


wildcard_constraints:
    volume_id=VOLUME_ID_PATTERN,
    batch=VOLUME_ID_PATTERN,
    group=r"55[1-9]",


def shell_prefix():
    """The start of every shell command: bash strict mode, the workflow's code on PYTHONPATH (no installed cadsflow
    needed), and, unless the rule runs in its own conda env (--sdm conda puts that env's python first), the folder of
    the interpreter running Snakemake first on PATH, so `python` is that venv's without activating it.
    """
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    settings = workflow.deployment_settings
    in_conda_env = (
        settings is not None and DeploymentMethod.CONDA in settings.deployment_method
    )
    prefix = f"set -euo pipefail; export PYTHONPATH={shlex.quote(WORKFLOW_CODE)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    if not in_conda_env:
        prefix += f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH; "
    return prefix


def project_path(path):
    """A config path as given if it exists from the working directory, else relative to the workflow."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return Path(workflow.basedir) / p


def _load_volumes():
    """Sources and volumes of the run: the sheet's, or for the demo the cohort the demo_cohort rule will write
    (planned from config/demo_cohort.yaml without writing: a dry run on a fresh clone writes no data).
    """
    sheet = Path(config["sheet"])
    try:
        if config["demo"]["enabled"]:
            return _planned_demo(sheet)
        sources = load_registry(config["registry"]) if config["registry"] else {}
        volumes = read_sheet(sheet, known_sources=set(sources) if sources else None)
    except (SheetError, RegistryError) as exc:
        raise WorkflowError(str(exc)) from None
    return sources, volumes, []


def _planned_demo(sheet):
    from cadsflow.demo import planned_demo_cohort

    folder = Path(config["demo"]["directory"])
    expected = {"sheet": folder / "volumes.tsv", "registry": folder / "registry.yaml"}
    for key, path in expected.items():
        if Path(config[key]).resolve() != path.resolve():
            raise WorkflowError(
                f"demo.enabled: config {key} {config[key]!r} must be {str(path)!r}, the demo cohort's "
                f"(or set demo.enabled: false for your own {key})"
            )
    sources, volumes, files = planned_demo_cohort(folder)
    return sources, {v.volume_id: v for v in volumes}, [str(f) for f in files]


LABEL_SPACE = load_label_space(project_path(config["label_space"]))
SOURCES, VOLUMES, DEMO_FILES = _load_volumes()
DEMO_FILE_SET = set(DEMO_FILES)
if DEMO_FILES:
    from cadsflow.demo import cohort_fingerprint

    DEMO_GENERATOR = cohort_fingerprint()


# Per-volume work runs in batches (cadsflow.sheet.make_batches): one job per batch, not per volume.
BATCHES = make_batches(VOLUMES, config["batching"]["volumes_per_batch"])
BATCH_OF = {vid: batch for batch, members in BATCHES.items() for vid in members}


def volumes_in_split(split):
    return [v for v, vol in VOLUMES.items() if vol.split == split]


def volume(volume_id):
    return VOLUMES[volume_id]


def batch_volumes(batch):
    return [VOLUMES[v] for v in BATCHES[batch]]


def standardized(volume_id):
    """The standardized folder of one volume (inside its batch's directory output)."""
    return f"results/standardized/{BATCH_OF[volume_id]}/{volume_id}"


def mem_for_largest_input(base_mb, per_input_mb):
    """Memory in MB for batch jobs: a base plus a multiple of the largest input file; doubles on each retry."""

    def mem(wildcards, input, attempt):
        largest = max((_size(Path(f)) for f in input), default=0) / 2**20
        return int((base_mb + per_input_mb * largest) * 2 ** (attempt - 1))

    return mem


def _size(path):
    """Bytes of a file, or of the files in a folder (a DICOM series)."""
    try:
        if path.is_dir():
            return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
        return path.stat().st_size
    except OSError:  # an unlistable folder is quarantined by the job, with the reason
        return 0
