"""Evaluation engine (Online Methods 5.1-5.4): per-structure metrics, the paper's false-negative rules, dataset
label alignment, baseline import, statistics, tables and figures.

Modules, in the order a volume flows through them:
- surfaces: surface elements and surface distances with the exact definitions of DeepMind's surface-distance;
- metrics: Dice, NSD (3 mm), HD, HD95 for all structures of a label map in one pass over the volume;
- volumes: reference volume table and the false-negative penalty / exclusion rules;
- alignment: per-source evaluation classes (config/evaluation_alignment.yaml);
- baseline: mapping another system's labels (TotalSegmentator v2) onto the unified structures;
- evaluate: test volumes (in batches) -> score tables, one row per volume, system and structure;
- statistics, plots, report: per structure and per dataset summaries, paired tests, figures.
"""
