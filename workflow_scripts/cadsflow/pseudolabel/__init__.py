"""Pseudo-labeling (Online Methods 2.1, 3.1): every volume through every specialist, in shards of volumes.

shards: which volumes a shard job takes (consecutive chunks of the sorted volume ids).
infer: predict one shard with one model load; per-volume label maps, a per-shard report.
postprocess: connected-component clean-up (config/postprocessing.yaml) and head-region gating and cropping.
"""
