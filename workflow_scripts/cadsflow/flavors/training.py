"""Plan, preprocess and train a flavor model with the specialists' machinery (Online Methods 2.3, 6.1).

A flavor model is trained exactly like a specialist (cadsflow.specialists.train: nnU-Net's own classes in the job's
process, the same markers), with three differences that are all data:

- planning: nnU-Net's fingerprint and planner run with the run's specialists preset (its planner, target spacing and
  plans name), then the flavor plans add the flavor configuration (cadsflow.flavors.network.write_flavor_plans)
  and only that configuration is preprocessed (the planner's 3d_fullres is never preprocessed here);
- training: the flavor preset's trainer, plans, configuration and schedule replace the specialists' ones in the
  preset that train_specialist and nnU-Net's environment read (`flavor_training_preset`); device, fold, threads,
  workers and resources stay the specialists' preset's;
- the markers live in the flavor's own nnU-Net roots (results/flavors/{flavor}/...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cadsflow.flavors.settings import FlavorPreset
from cadsflow.specialists.presets import Preset


def flavor_training_preset(specialists: Preset, flavor: FlavorPreset) -> Preset:
    """The specialists' preset with the flavor's trainer, plans, configuration and schedule (what a flavor trains)."""
    return dataclasses.replace(specialists, name=flavor.name, trainer=flavor.trainer, plans=flavor.plans,
                               configuration=flavor.configuration, schedule=dict(flavor.schedule))


def plan_flavor(dataset_id: int, dataset_name: str, specialists: Preset, flavor: FlavorPreset) -> Path:
    """Fingerprint and plan the raw dataset with the specialists' planner, write the flavor plans, preprocess the
    flavor configuration; return the flavor plans file. nnU-Net's folders must be this process's already."""
    from cadsflow.flavors.network import write_flavor_plans
    from cadsflow.specialists.planning import plan, preprocess

    planner_plans = plan(dataset_id, dataset_name, specialists)
    plans_file = write_flavor_plans(planner_plans, flavor)
    preprocess(dataset_id, dataset_name, flavor_training_preset(specialists, flavor))
    return plans_file
