"""The three model flavors per group (Online Methods 2.3, 6.1) inside nnU-Net.

settings: the flavor presets of config/flavors.yaml as validated data.
network: nnU-Net plans -> flavor plans, a new configuration whose architecture is the paper's residual U-Net.
intensity: the export-time 5th-95th percentile scaling to [0, 1] that replaces nnU-Net's CT normalisation.
datasets: the scaled images per standardize batch and the GT, Pseudo and Shape training sets as nnU-Net raw
    datasets (with the ground-truth share per structure that the ranking reads).
training: flavor planning and training through the specialists' nnU-Net path (cadsflow.specialists.train).
__main__: `python -m cadsflow.flavors images|dataset|train` for the rules (rules/flavors.smk), plans|scale by hand.
The trainer is workflow_scripts/nnunet_trainers/cads_flavor_trainers.py (found through nnUNet_extTrainer).
"""
