"""Shape-prior quality control of pseudo-labels (Online Methods 2.2): which images leave the Shape flavor.

Per group, an implicit shape prior (an auto-decoder after the paper's refs 45-46) is trained on ground-truth label
maps only; every pseudo-label is then reconstructed by the prior, and each structure is scored by the 90th-percentile
Hausdorff distance between pseudo-label and reconstruction. A clean pseudo-label is reconstructed closely; an
implausible one is not. Per image the structure scores are combined, and the worst ``exclude_fraction`` (10%) of a
group's images are excluded from the Shape-flavor training set (Online Methods 2.3, Table A.4).

Modules, in the order data flows through them:
- presets.py     the presets of config/shape_qc.yaml (paper, demo)
- sampling.py    label maps as points in a shared physical frame (mm from the foreground centroid), boundary-biased
- model.py       the decoder MLP f(x, z) -> class logits, and the saved prior
- train.py       decoder and per-map latent codes trained jointly
- reconstruct.py a new code fitted with the decoder frozen, decoded on the label map's own grid
- score.py       per-structure HD90 (cadsflow.evaluation.surfaces) with a status for every structure
- exclude.py     per-image scores and the worst-fraction cut
- gallery.py     PNG of the worst volumes
- __main__.py    the command lines the rules call: train, score, exclude, gallery
"""
