# Lookups of the evaluate stage (rules/evaluate.smk includes this file at its top): test batches, references,
# the model's and the compared systems' predictions, baselines and report files.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

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


def ev_prediction(volume_id, path=None):
    """The prediction path of a volume (the model's, or `path`); a '{group}' left in it means one map per group.
    The specialists' pseudo-labels (PL_MAP_PATTERN) lie in their shard's folder."""
    path = path or EV["prediction"]
    if path.startswith(f"{PL_DIR}/"):
        return pl_prediction_path(path, volume_id)
    return path.replace("{volume_id}", volume_id)


# Systems compared with the model besides the baseline: name -> prediction path (config evaluation.comparisons)
EV_COMPARISONS = {
    name: path
    for name, path in EV["comparisons"].items()
    if path and path != EV["prediction"]
}


def ev_system_inputs(path, volume_ids):
    """What a system's predictions come from: the final models' test predictions, the pseudo-label shards' folders, or
    existing files of another system. Factory predictions exist only for the sheet's volumes.
    """
    ids = [v for v in volume_ids if v in VOLUMES]
    if path.startswith(f"{FN_PREDICTIONS}/"):
        return [fn_prediction_dir(g) for g in FN_GROUPS] if ids else []
    if path.startswith(f"{PL_DIR}/"):
        return sorted({pl_shard_dir_of(g, v) for g in SP_GROUPS for v in ids})
    if "{group}" in path:
        # per-group files of an outside system: each group map is read if it exists
        return []
    return [ev_prediction(v, path) for v in volume_ids]


def ev_prediction_inputs(volume_ids):
    """The inputs of the model's and every comparison system's predictions of `volume_ids`."""
    paths = [EV["prediction"], *EV_COMPARISONS.values()]
    return sorted({f for path in paths for f in ev_system_inputs(path, volume_ids)})


def ev_comparisons(volume_id):
    """The comparison systems' predictions of one volume (name -> path)."""
    return {
        name: ev_prediction(volume_id, path) for name, path in EV_COMPARISONS.items()
    }


def ev_report_systems():
    """The systems the report compares the model with, in order: the comparisons, then the baseline."""
    baseline = ["baseline"] if EV["baseline"]["prediction_dir"] else []
    return [*EV_COMPARISONS, *baseline]


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
            comparisons=ev_comparisons(v),
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
