# Lookups of the flavors stage (rules/flavors.smk includes this file at its top): the flavor preset, each flavor's
# nnU-Net roots, the scaled images, the inputs of each training set, and the 27 model markers.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.flavors.datasets import GROUND_TRUTH, SHAPE, TRAINING_SETS
from cadsflow.flavors.settings import load_flavor_names, load_flavor_preset

FL = config["flavors"]
FL_CONFIG = project_path(FL["config"])
# GT, Pseudo, Shape (config/flavors.yaml)
FL_FLAVORS = list(load_flavor_names(FL_CONFIG))
FL_FLAVOR_PATTERN = "|".join(FL_FLAVORS)
if set(FL_FLAVORS) - set(TRAINING_SETS):
    raise WorkflowError(
        f"{FL_CONFIG}: flavors {sorted(set(FL_FLAVORS) - set(TRAINING_SETS))} have no training set; "
        f"known flavors: {sorted(TRAINING_SETS)} (cadsflow.flavors.datasets.TRAINING_SETS)"
    )
# the flavor preset of the run's preset name (smoke, paper); device, threads, memory and GPUs are SP_PRESET's
FL_PRESET = load_flavor_preset(config["preset"], FL_CONFIG)
FL_DIR = "results/flavors"
FL_IMAGES = f"{FL_DIR}/images"  # {batch}/{volume_id}.nii.gz and {batch}/index.tsv (volume_id, split, status)
FL_ARGS = " ".join(  # the presets, as every step's command line names them
    f"--{name} {shlex.quote(str(value))}"
    for name, value in [
        ("preset", FL_PRESET.name),
        ("config", FL_CONFIG),
        ("presets-file", project_path(config["specialists"]["presets"])),
    ]
)
FL_IMAGE_ARGS = (
    f"--preset {shlex.quote(FL_PRESET.name)} --config {shlex.quote(str(FL_CONFIG))}"
)
# a changed model setting (flavor or specialists' planner) replans and retrains (Snakemake's params trigger)
FL_SETTINGS = f"{FL_PRESET.model_settings}; planner: {SP_PRESET.model_settings}"


def fl_root(flavor):
    """A flavor's nnU-Net roots live under results/flavors/{flavor}/ (every flavor keeps the group's dataset id)."""
    return f"{FL_DIR}/{flavor}"


def fl_nnunet_args(wc):
    root = fl_root(wc.flavor)
    return (
        f"--nnunet-raw {root}/nnUNet_raw --nnunet-preprocessed {root}/nnUNet_preprocessed"
        f" --nnunet-results {root}/models"
    )


def fl_dataset_name(group):
    return GROUP_TRAINING[int(group)].dataset_name  # Dataset551_Organs, ...


def fl_dataset_dir(group, flavor):
    return f"{fl_root(flavor)}/nnUNet_raw/{fl_dataset_name(group)}"


def fl_dataset_json(group, flavor):
    """The flavor's raw dataset.json (numTraining: the flavor's training volumes)."""
    return f"{fl_dataset_dir(group, flavor)}/dataset.json"


def fl_gt_share(group, flavor):
    """Per structure: training volumes holding it and the share of them whose label came from ground truth."""
    return f"{fl_dataset_dir(group, flavor)}/cads_gt_share.tsv"


def fl_planned(group, flavor):
    return f"{fl_root(flavor)}/nnUNet_preprocessed/{fl_dataset_name(group)}.planned"


def fl_model_marker(group, flavor):
    """The marker a trained flavor model leaves: JSON naming its model folder and fold (as the specialists')."""
    return f"{fl_root(flavor)}/models/{group}.done"


def fl_image(volume_id):
    """A volume's percentile-scaled image (every flavor model's input, in training and prediction)."""
    return f"{FL_IMAGES}/{BATCH_OF[volume_id]}/{volume_id}.nii.gz"


def fl_image_batch(batch):
    return f"{FL_IMAGES}/{batch}"


def fl_training_set(wc):
    return TRAINING_SETS[wc.flavor]


def fl_dataset_input(wc):
    """The inputs of one group's flavor dataset: the scaled images and what its training set is made from."""
    if fl_training_set(wc) == GROUND_TRUTH:
        ids = training_volume_ids(GROUP_TRAINING[int(wc.group)], VOLUMES)
        return {
            "specialist": f"{sp_raw_dataset(wc.group)}/dataset.json",
            "images": sorted({fl_image_batch(BATCH_OF[v]) for v in ids}),
        }
    inputs = {
        # every batch: the shard reports list every volume, held-out ones included (the job reads their split)
        "images": [fl_image_batch(b) for b in BATCHES],
        "reports": [pl_shard_report(wc.group, k) for k in pl_shards()],
        # the shards' declared map folders; the job reads each report's maps from the folder beside it
        "maps": pl_shard_dirs(wc.group),
    }
    if FL["pseudo_gt_override"]:
        inputs["gt"] = GT_TARGETS
    if fl_training_set(wc) == SHAPE:
        inputs["excluded"] = f"{SQ_DIR}/{wc.group}/excluded.tsv"
    if FL["empty_training_set"] == "ground_truth":
        inputs["specialist"] = f"{sp_raw_dataset(wc.group)}/dataset.json"
    return inputs


def fl_dataset_args(wc, input):
    """The training set's part of the dataset step's command line."""
    if fl_training_set(wc) == GROUND_TRUTH:
        return f"--specialist-dataset {shlex.quote(sp_raw_dataset(wc.group))}"
    args = (
        f"--pseudo-reports {' '.join(map(shlex.quote, input.reports))}"
        f" --held-out-split {shlex.quote(FL['validation_split'])}"
    )
    if FL["pseudo_gt_override"]:
        args += " --gt-root results/gt"
    if fl_training_set(wc) == SHAPE:
        args += f" --excluded {shlex.quote(input.excluded)}"
    if FL["empty_training_set"] == "ground_truth":
        args += f" --empty-fallback-dataset {shlex.quote(sp_raw_dataset(wc.group))}"
    return args


# The 27 flavor models (9 groups x 3 flavors): every group whose specialist has training data
FL_TARGETS = [fl_model_marker(g, f) for g in SP_GROUPS for f in FL_FLAVORS]
