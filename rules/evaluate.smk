# Stage: evaluate (Online Methods 5.1-5.4). Per test volume: Dice, NSD (3 mm), HD, HD95 of every structure of
# its source's evaluation classes (config/evaluation_alignment.yaml), with the paper's false-negative penalty and
# exclusions, for the model and optionally a baseline (its labels mapped onto the unified structures). Then per
# dataset and per structure: statistics, paired tests, tables and figures for the report.
#
# Two ways to name what is scored (config evaluation.*):
# - reference_dir "" (default): the sheet's test split; references are the standardized label maps, predictions
#   {prediction_dir}/{volume_id}.nii.gz on the same grid, each volume aligned by its sheet source;
# - reference_dir a folder: every {volume_id}.nii.gz in it (one listing at parse time, the only file-system scan
#   of this stage), scored against {prediction_dir}/{volume_id}.nii.gz with the alignment of reference_source.
# Volumes are scored in batches (the standardize batches' test members, or chunks of the folder's volumes of
# batching.volumes_per_batch): one job per batch, one score table per batch, rows per volume and structure.
# Needs from common.smk: config, VOLUMES, BATCHES, BATCH_OF, volume, volumes_in_split, standardized, project_path.

from cadsflow.evaluation.baseline import baseline_mapping_path
from cadsflow.evaluation.report import REPORT_OUTPUTS

EV_DEFAULTS = {
    "prediction_dir": "results/final/predictions",
    "reference_dir": "",
    "reference_source": "unified",
    "alignment": "config/evaluation_alignment.yaml",
    "reference_volumes": "cohort",
    "reference_volume_statistic": "mean",
    "nsd_tolerance_mm": 3.0,
    "bootstrap_samples": 1000,
    "seed": 0,
    "correction": "holm",
    "alpha": 0.05,
    "baseline": {"name": "totalsegmentator_v2", "prediction_dir": ""},
}
EV = {**EV_DEFAULTS, **config.get("evaluation", {})}
EV["baseline"] = {**EV_DEFAULTS["baseline"], **EV.get("baseline", {})}
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
    return f"{EV['prediction_dir']}/{volume_id}.nii.gz"


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


rule evaluation_reference_volumes:
    """Per evaluation class, the mean reference volume over the cohort's labelled volumes (Table A.5's role)."""
    input:
        references=ev_reference_inputs(ev_labelled_volumes()),
    output:
        table=EV_COHORT_VOLUMES,
    log:
        "logs/evaluation/reference_volumes.log",
    benchmark:
        "benchmarks/evaluation/reference_volumes.tsv"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=4000,
        runtime=10 + len(ev_labelled_volumes()) // 60,
        cpus_per_task=1,
    params:
        references=[ev_reference(v) for v in ev_labelled_volumes()],
        sources=[ev_source(v) for v in ev_labelled_volumes()],
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        statistic=EV["reference_volume_statistic"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_reference_volumes.py"


rule evaluate_batch:
    """Score each test volume of a batch (model, and baseline if configured) against its reference."""
    input:
        references=lambda wc: ev_reference_inputs(EV_BATCHES[wc.batch]),
        predictions=lambda wc: [ev_prediction(v) for v in EV_BATCHES[wc.batch]],
        baselines=lambda wc: [
            ev_baseline(v) for v in EV_BATCHES[wc.batch] if ev_baseline(v)
        ],
        reference_volumes=ev_reference_volumes(),
    output:
        scores="results/evaluation/batches/{batch}.tsv",
    log:
        "logs/evaluation/batches/{batch}.log",
    benchmark:
        "benchmarks/evaluation/batches/{batch}.tsv"
    wildcard_constraints:
        batch=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=lambda wc, attempt: 4000 * 2 ** (attempt - 1),
        runtime=lambda wc: 5 + 2 * len(EV_BATCHES[wc.batch]),
        cpus_per_task=1,
    params:
        volumes=lambda wc: ev_batch_volumes(wc.batch),
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        baseline_mapping=str(baseline_mapping_path(EV["baseline"]["name"])),
        tolerance_mm=EV["nsd_tolerance_mm"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_batch.py"


rule evaluation_report:
    """Aggregate all volumes: per structure and per dataset statistics, model vs. baseline tests, figures."""
    input:
        scores=expand("results/evaluation/batches/{batch}.tsv", batch=EV_BATCHES),
    output:
        scores=report(
            EV_REPORT_FILES["scores"], category="Evaluation", subcategory="Tables"
        ),
        structures=report(
            EV_REPORT_FILES["structures"], category="Evaluation", subcategory="Tables"
        ),
        datasets=report(
            EV_REPORT_FILES["datasets"], category="Evaluation", subcategory="Tables"
        ),
        comparison=report(
            EV_REPORT_FILES["comparison"], category="Evaluation", subcategory="Tables"
        ),
        summary=report(
            EV_REPORT_FILES["summary"], category="Evaluation", subcategory="Tables"
        ),
        radar=report(
            EV_REPORT_FILES["radar"], category="Evaluation", subcategory="Figures"
        ),
        bars=report(
            EV_REPORT_FILES["bars"], category="Evaluation", subcategory="Figures"
        ),
        bubbles=report(
            EV_REPORT_FILES["bubbles"], category="Evaluation", subcategory="Figures"
        ),
    log:
        "logs/evaluation/report.log",
    benchmark:
        "benchmarks/evaluation/report.tsv"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        cpus_per_task=1,
    params:
        bootstrap_samples=EV["bootstrap_samples"],
        seed=EV["seed"],
        correction=EV["correction"],
        alpha=EV["alpha"],
    script:
        "../workflow_scripts/entry/evaluate_report.py"
