# Shared lookups for all rules: the validated volume sheet and small param/resource functions.
# Everything here runs at parse time, so it must stay cheap at 22,022 volumes: one TSV read, no file scans.

import os
import shlex
import sys
from pathlib import Path

WORKFLOW_CODE = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, WORKFLOW_CODE)

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


def batch_inputs(wildcards):
    """Images and labels of a batch that exist: a missing file becomes a quarantine line, not a DAG failure."""
    paths = []
    for vol in batch_volumes(wildcards.batch):
        paths += [
            p
            for p in (vol.image, vol.label)
            if p and (p in DEMO_FILE_SET or _readable(p))
        ]
    return paths


def _readable(path):
    """Exists and can be opened: an unreadable input would fail Snakemake's own bookkeeping, not quarantine."""
    return Path(path).exists() and os.access(path, os.R_OK)


def known_label_values(batch):
    """Per volume of the batch: the label values its source's mapping knows (None without a registry)."""
    values = {}
    for vol in batch_volumes(batch):
        source = SOURCES.get(vol.source)
        values[vol.volume_id] = sorted(source.known_values()) if source else None
    return values


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


# --- evaluate (rules/evaluate.smk) ---------------------------------------------------------------------

from cadsflow.evaluation.baseline import baseline_mapping_path
from cadsflow.evaluation.report import REPORT_OUTPUTS

EV = config["evaluation"]  # validated and complete (config/schema.yaml)
# Table A.5 medians (Online Methods 5.1)
EV_PAPER_VOLUMES = "config/reference_volumes.tsv"
EV_COHORT_VOLUMES = "results/evaluation/reference_volumes.tsv"
EV_REPORT = "results/evaluation/report"
EV_REPORT_FILES = {
    "scores": f"{EV_REPORT}/scores.tsv",
    "structures": f"{EV_REPORT}/structures.tsv",
    "datasets": f"{EV_REPORT}/datasets.tsv",
    "comparison": f"{EV_REPORT}/comparison.tsv",
    "summary": f"{EV_REPORT}/summary.tsv",
    "radar": f"{EV_REPORT}/radar_dice.png",
    "bars": f"{EV_REPORT}/dataset_bars.png",
    "bubbles": f"{EV_REPORT}/differences_bubbles.png",
}
assert set(EV_REPORT_FILES) == set(REPORT_OUTPUTS)


def _ev_folder_volumes():
    folder = EV["reference_dir"]
    if not folder:
        return None
    if not Path(folder).is_dir():
        raise WorkflowError(f"evaluation.reference_dir {folder!r} is not a folder")
    return sorted(glob_wildcards(str(Path(folder) / "{volume_id}.nii.gz")).volume_id)


EV_FOLDER_VOLUMES = _ev_folder_volumes()


def _ev_batches():
    """Evaluation batch -> its volume ids (test volumes only)."""
    if EV_FOLDER_VOLUMES is not None:
        per = config.get("batching", {}).get("volumes_per_batch", 100)
        ids = EV_FOLDER_VOLUMES
        return {
            f"folder.{k // per:04d}": ids[k : k + per] for k in range(0, len(ids), per)
        }
    test = set(volumes_in_split("test"))
    batches = {b: [v for v in members if v in test] for b, members in BATCHES.items()}
    return {b: members for b, members in batches.items() if members}


EV_BATCHES = _ev_batches()


def ev_reference(volume_id):
    if EV_FOLDER_VOLUMES is not None:
        return str(Path(EV["reference_dir"]) / f"{volume_id}.nii.gz")
    return standardized(volume_id)


def ev_source(volume_id):
    return (
        EV["reference_source"]
        if EV_FOLDER_VOLUMES is not None
        else volume(volume_id).source
    )


def ev_prediction(volume_id):
    """The prediction path of a volume; a '{group}' left in it means one label map per group."""
    return EV["prediction"].replace("{volume_id}", volume_id)


def ev_prediction_inputs(volume_ids):
    """What the predictions come from: the factory's pseudo-label shards, or existing files of another system."""
    if EV["prediction"].startswith(f"{PL_DIR}/"):
        return sorted({pl_shard_report_of(g, v) for g in SP_GROUPS for v in volume_ids})
    if "{group}" in EV["prediction"]:
        # per-group files of an outside system: each group map is read if it exists
        return []
    return [ev_prediction(v) for v in volume_ids]


def ev_baseline(volume_id):
    folder = EV["baseline"]["prediction_dir"]
    return f"{folder}/{volume_id}.nii.gz" if folder else ""


def ev_reference_inputs(volume_ids):
    """What the references' files come from: standardize batch folders, or the user's files."""
    if EV_FOLDER_VOLUMES is not None:
        return [ev_reference(v) for v in volume_ids]
    return sorted({f"results/standardized/{BATCH_OF[v]}" for v in volume_ids})


def ev_batch_volumes(batch):
    return [
        dict(
            volume_id=v,
            source=ev_source(v),
            reference=ev_reference(v),
            prediction=ev_prediction(v),
            baseline=ev_baseline(v),
        )
        for v in EV_BATCHES[batch]
    ]


def ev_labelled_volumes():
    """References the cohort volume table is computed from: every labelled volume (or the folder's files)."""
    if EV_FOLDER_VOLUMES is not None:
        return EV_FOLDER_VOLUMES
    return [v for v, vol in VOLUMES.items() if vol.has_label]


def ev_reference_volumes():
    choice = EV["reference_volumes"]
    if choice == "cohort":
        return EV_COHORT_VOLUMES
    return str(project_path(EV_PAPER_VOLUMES if choice == "paper" else choice))


# --- specialists (rules/specialists.smk) -------------------------------------------------------------------

from cadsflow.specialists.presets import load_preset

SP_PRESET = load_preset(
    config["preset"], project_path(config["specialists"]["presets"])
)
SP_RAW = config["specialists"]["nnunet_raw"]
SP_PREPROCESSED = config["specialists"]["nnunet_preprocessed"]
SP_MODELS = config["specialists"]["models"]  # nnUNet_results
SP_ARGS = " ".join(  # the preset and nnU-Net's folders, as every step's command line names them
    f"--{name} {shlex.quote(str(value))}"
    for name, value in [
        ("preset", SP_PRESET.name),
        ("presets-file", project_path(config["specialists"]["presets"])),
        ("nnunet-raw", SP_RAW),
        ("nnunet-preprocessed", SP_PREPROCESSED),
        ("nnunet-results", SP_MODELS),
    ]
)


def sp_model_marker(group):
    """The marker a trained specialist leaves: JSON naming its model folder and fold."""
    return f"{SP_MODELS}/{group}.done"


def sp_protected(path):
    """A trained model's marker, write-protected when the config asks for it (Snakemake's protected())."""
    return protected(path) if config["specialists"]["protect_models"] else path


def sp_raw_dataset(group):
    """The group's nnU-Net raw dataset folder, as the gt stage names and exports it (GROUP_TRAINING, rules/gt.smk)."""
    return f"{SP_RAW}/{GROUP_TRAINING[int(group)].dataset_name}"


def sp_job_resources(runtime_min):
    """Scheduler resources of a preset's job (grow with each retry); GPU keys only when the preset asks for a GPU.

    CPUs come from the rule's threads. A site that must name the GPU model sets gpu_model in the preset or with
    the profile's set-resources.
    """
    resources = {
        "mem_mb": lambda wc, attempt: SP_PRESET.mem_mb * attempt,
        "runtime": lambda wc, attempt: runtime_min * attempt,
    }
    if SP_PRESET.gpus:
        resources["gpu"] = SP_PRESET.gpus
        if SP_PRESET.gpu_model:
            resources["gpu_model"] = SP_PRESET.gpu_model
    return resources


# --- pseudolabel (rules/pseudolabel.smk) ---------------------------------------------------------------------

from cadsflow.pseudolabel.postprocess import BRAIN_GROUP, is_head_group

NECK_FALLBACK_GROUP, NECK_VERTEBRAE_GROUP = (
    558,
    552,
)  # 558 without brain: the neck above 552's upper vertebrae
from cadsflow.pseudolabel.shards import Shards
from cadsflow.specialists.nnunet import TRAINERS_DIR

PL_DIR = "results/pseudolabels"  # {group}/shard_{k}.tsv reports and {group}/{volume_id}.nii.gz label maps
PL_SHARDS = Shards(VOLUMES, config["pseudolabel"]["shard_size"] or SP_PRESET.shard_size)
PL_DEVICE = config["pseudolabel"]["device"] or SP_PRESET.device


def pl_shards():
    """Shard indices of the sheet: shard k holds the k-th chunk of the sorted volume ids."""
    return PL_SHARDS.indices()


def pl_shard_members(k):
    return PL_SHARDS.members(int(k))


def pl_shard_batches(wc):
    """The standardize batches (directory outputs) that hold the shard's volumes."""
    return sorted(
        {f"results/standardized/{BATCH_OF[v]}" for v in pl_shard_members(wc.shard)}
    )


def pl_shard_report(group, k):
    return f"{PL_DIR}/{group}/shard_{k}.tsv"


def pl_shard_report_of(group, volume_id):
    """The report a downstream per-volume rule waits for before it reads the volume's label map."""
    return pl_shard_report(group, PL_SHARDS.of(volume_id))


def pl_label_map(group, volume_id):
    """A volume's label map for one group (exists unless its shard report says quarantined or failed)."""
    return f"{PL_DIR}/{group}/{volume_id}.nii.gz"


def pl_brain_shard(wc):
    """Head groups depend on group 553's shard of the same volumes: the DAG edge 553 -> 557/558; group 558 also
    on group 552's (its neck fallback when no brain is found)."""
    group = int(wc.group)
    reports = [pl_shard_report(BRAIN_GROUP, wc.shard)] if is_head_group(group) else []
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in SP_GROUPS:
        reports.append(pl_shard_report(NECK_VERTEBRAE_GROUP, wc.shard))
    return reports


def pl_brain_args(wc):
    group = int(wc.group)
    args = f"--brain-dir {PL_DIR}/{BRAIN_GROUP}" if is_head_group(group) else ""
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in SP_GROUPS:
        args += f" --vertebrae-dir {PL_DIR}/{NECK_VERTEBRAE_GROUP}"
    return args


# --- gt (rules/gt.smk) ---------------------------------------------------------------------------------

from cadsflow.gt.nnunet_dataset import CandidateVolume
from cadsflow.gt.training import (
    TrainingConfigError,
    atlas_sources,
    check_known_sources,
    load_group_training,
    training_volume_ids,
)

GT = config["gt"]
GROUP_TRAINING = load_group_training(
    project_path(GT["group_training"]), GT["training_preset"] or config["preset"]
)
GT_ATLAS_SOURCES = atlas_sources(GROUP_TRAINING)
try:
    check_known_sources(
        GROUP_TRAINING,
        set(SOURCES) | {v.source for v in VOLUMES.values()},
        f"group training preset {GT['training_preset'] or config['preset']!r}: ",
    )
except TrainingConfigError as exc:
    # A sheet without a group's training sources (a user's own cohort, a subset) still standardizes, prepares GT
    # and evaluates; that group just gets no dataset, model or pseudo-labels. Say so loudly, do not stop.
    logger.warning(f"{exc}; groups without training volumes get no specialist")
GT_NNUNET_RAW = config["specialists"]["nnunet_raw"]
GT_ATLAS_IMAGE = GT["atlas"]["image"] or "results/atlas/phantom_image.nii.gz"
GT_ATLAS_LABELS = GT["atlas"]["labels"] or "results/atlas/phantom_labels.nii.gz"
GT_REGISTRATION = GT["registration"]
# what cadsflow.gt.atlas.RegistrationSettings takes; `threads` goes to the rule (ITK reads it at process start)
GT_REGISTRATION_SETTINGS = {k: v for k, v in GT_REGISTRATION.items() if k != "threads"}
GT_FACE_PATTERN = GT["face_mask"]["pattern"] or pl_label_map(553, "{volume_id}")
GT_FACE_VALUE = GT["face_mask"]["value"] or LABEL_SPACE.group_label_map(553)["face"]


def gt_folder(volume_id):
    """A volume's ground-truth folder (inside its batch's directory output)."""
    return f"results/gt/{BATCH_OF[volume_id]}/{volume_id}"


def gt_batch_source(batch):
    return VOLUMES[BATCHES[batch][0]].source  # batches hold one source each


def gt_is_atlas_batch(batch):
    return gt_batch_source(batch) in GT_ATLAS_SOURCES


def gt_needs_batch(batch):
    """Batches with something to do: a labelled volume, or a source whose CTs get atlas labels."""
    return gt_is_atlas_batch(batch) or any(VOLUMES[v].has_label for v in BATCHES[batch])


def gt_atlas_input(wildcards):
    if gt_is_atlas_batch(wildcards.batch):
        return {"atlas_image": GT_ATLAS_IMAGE, "atlas_labels": GT_ATLAS_LABELS}
    return {}


def gt_training_ids(wildcards):
    training = GROUP_TRAINING[int(wildcards.group)]
    if training.name != wildcards.name:
        asked = f"Dataset{wildcards.group}_{wildcards.name}"
        raise ValueError(
            f"{training.dataset_name} is group {wildcards.group}'s dataset, not {asked}"
        )
    return training_volume_ids(training, VOLUMES)


def gt_face_inputs(wildcards):
    """What the face masks of a batch wait for: group 553's shard reports when they are pseudo-labels."""
    if not GT["face_mask"]["pattern"]:
        return sorted({pl_shard_report_of(553, v) for v in BATCHES[wildcards.batch]})
    return [GT_FACE_PATTERN.format(volume_id=v) for v in BATCHES[wildcards.batch]]


GT_TARGETS = expand(
    "results/gt/{batch}", batch=[b for b in BATCHES if gt_needs_batch(b)]
)
GT_DATASET_TARGETS = [
    f"{GT_NNUNET_RAW}/{t.dataset_name}/dataset.json"
    for t in GROUP_TRAINING.values()
    if training_volume_ids(t, VOLUMES)
]
# Groups whose specialist has training data: only they get a model and pseudo-labels
SP_GROUPS = [
    g for g, t in sorted(GROUP_TRAINING.items()) if training_volume_ids(t, VOLUMES)
]
GT_ANONYMIZE_TARGETS = expand(
    "results/anonymized/{batch}",
    batch=[
        b
        for b in BATCHES
        if SOURCES.get(gt_batch_source(b))
        and SOURCES[gt_batch_source(b)].anonymize_face
    ],
)
