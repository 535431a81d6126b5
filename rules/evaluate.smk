# Stage: evaluate (Online Methods 5.1-5.4). Per test volume: Dice, NSD (3 mm), HD, HD95 of every structure of
# its source's evaluation classes (config/evaluation_alignment.yaml), with the paper's false-negative penalty and
# exclusions, for the model and optionally a baseline imported into the unified label space. Then per dataset and
# per structure: statistics, paired tests, tables and figures for the report.
#
# Two ways to name what is scored (config evaluation.*):
# - reference_dir "" (default): the sheet's test split; references are the standardized label maps, predictions
#   {prediction_dir}/{volume_id}.nii.gz on the same grid, each volume aligned by its sheet source;
# - reference_dir a folder: every {volume_id}.nii.gz in it (one listing at parse time, the only file-system scan
#   of this stage), scored against {prediction_dir}/{volume_id}.nii.gz with the alignment of reference_source.
# Per-volume jobs share the group "evaluation": run with `--group-components evaluation=<n>` to submit n volumes
# per cluster job.

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


def ev_volumes():
    """The volumes to score: the test split, or the files of the configured reference folder."""
    return (
        EV_FOLDER_VOLUMES if EV_FOLDER_VOLUMES is not None else volumes_in_split("test")
    )


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


def ev_baseline(wildcards):
    if not EV["baseline"]["prediction_dir"]:
        return []
    return [f"results/evaluation/baseline/{wildcards.volume_id}.nii.gz"]


rule evaluation_reference_volumes:
    """Per evaluation class, the mean reference volume over the cohort's labelled volumes (Table A.5's role)."""
    input:
        references=[ev_reference(v) for v in ev_labelled_volumes()],
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
        runtime=lambda wc, input: 10 + len(input.references) // 60,
        cpus_per_task=1,
    params:
        sources=[ev_source(v) for v in ev_labelled_volumes()],
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        statistic=EV["reference_volume_statistic"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_reference_volumes.py"


rule evaluation_import_baseline:
    """Map a baseline's prediction (TotalSegmentator v2 labels) onto the unified structures, on the same grid."""
    input:
        baseline=f"{EV['baseline']['prediction_dir']}/{{volume_id}}.nii.gz",
    output:
        unified="results/evaluation/baseline/{volume_id}.nii.gz",
    log:
        "logs/evaluation/baseline/{volume_id}.log",
    benchmark:
        "benchmarks/evaluation/baseline/{volume_id}.tsv"
    group:
        "evaluation"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=mem_from_inputs(1000, 40),
        runtime=10,
        cpus_per_task=1,
    params:
        mapping=str(baseline_mapping_path(EV["baseline"]["name"])),
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_import_baseline.py"


rule evaluate_volume:
    """Score one test volume's prediction (and the baseline's) against its reference, class by class."""
    input:
        reference=lambda wc: ev_reference(wc.volume_id),
        prediction=f"{EV['prediction_dir']}/{{volume_id}}.nii.gz",
        baseline=ev_baseline,
        reference_volumes=ev_reference_volumes(),
    output:
        scores="results/evaluation/volumes/{volume_id}.tsv",
    log:
        "logs/evaluation/volumes/{volume_id}.log",
    benchmark:
        "benchmarks/evaluation/volumes/{volume_id}.tsv"
    group:
        "evaluation"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=mem_from_inputs(1500, 60),
        runtime=20,
        cpus_per_task=1,
    params:
        source=lambda wc: ev_source(wc.volume_id),
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        baseline_mapping=str(baseline_mapping_path(EV["baseline"]["name"])),
        tolerance_mm=EV["nsd_tolerance_mm"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_volume.py"


rule evaluation_report:
    """Aggregate all volumes: per structure and per dataset statistics, model vs. baseline tests, figures."""
    input:
        scores=expand(
            "results/evaluation/volumes/{volume_id}.tsv", volume_id=ev_volumes()
        ),
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
