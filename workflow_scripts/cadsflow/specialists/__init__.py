"""Specialist models (Online Methods 2.1, 6.1): one nnU-Net v2 3d_fullres model per structure group, mirroring off.

presets: the training presets (config/presets.yaml) as validated data.
nnunet: nnU-Net's environment, commands and folder names, built from config paths.
train: plan, preprocess and train one group's specialist; write the marker the workflow waits for.
"""
