"""The three model flavors per group (Online Methods 2.3, 6.1) inside nnU-Net.

settings: the flavor presets of config/flavors.yaml as validated data.
network: nnU-Net plans -> flavor plans, a new configuration whose architecture is the paper's residual U-Net.
intensity: the export-time 5th-95th percentile scaling to [0, 1] that replaces nnU-Net's CT normalisation.
__main__: `python -m cadsflow.flavors plans|scale` for the rules.
The trainer is workflow_scripts/nnunet_trainers/cads_flavor_trainers.py (found through nnUNet_extTrainer).
"""
