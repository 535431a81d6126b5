"""The final CADS model of each group (Online Methods 4.1, 6.1): training subsets and class-balanced sampling.

config: config/final.yaml (threshold, minority classes, head-subset rules, the final model's presets)
counts: per-volume voxel counts of a group's structures (label-count tables), from label maps
oversampling: structure frequencies, weights and per-image sampling probabilities, as the authors computed them;
    the table the trainer (workflow_scripts/nnunet_trainers/cads_oversampling_trainers.py) samples by
subsets: the head groups' training subsets (557: brain > 2,000 voxels; 558: >= 24 structures present)
"""
