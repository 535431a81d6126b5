"""Real segmentations: TotalSegmentator's fast model (prediction) against its full model (reference) on the
example CT in ../shared/data/totalseg_example. Every structure's Dice, NSD, HD and HD95 equal the reference
library's (surface-distance run structure by structure on the full grid)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

surface_distance = pytest.importorskip("surface_distance", reason="surface-distance is the reference (test extra)")

from cadsflow.evaluation.metrics import score_label_maps  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg_example"
pytestmark = [
    pytest.mark.skipif(not EXAMPLE.exists(), reason=f"{EXAMPLE} not present (../shared is absent on this machine)"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]
np.Inf = np.inf  # type: ignore[attr-defined]  # surface-distance 0.1 on NumPy 2
np.NaN = np.nan  # type: ignore[attr-defined]


def test_example_pair_scores_equal_the_reference_library_for_every_structure():
    ref_img = nib.load(str(EXAMPLE / "example_seg.nii.gz"))
    ref = np.asarray(ref_img.dataobj).astype(np.int16)
    pred = np.asarray(nib.load(str(EXAMPLE / "example_seg_fast.nii.gz")).dataobj).astype(np.int16)
    spacing = tuple(float(s) for s in ref_img.header.get_zooms()[:3])
    names = {int(k): v for k, v in json.loads((EXAMPLE / "labels_total_v2.json").read_text()).items()}
    present = sorted((set(np.unique(ref)) | set(np.unique(pred))) - {0})
    ours = score_label_maps(ref, pred, spacing, {names[int(v)]: int(v) for v in present})

    compared = []
    for value in present:
        mask_ref, mask_pred = ref == value, pred == value
        dists = surface_distance.compute_surface_distances(mask_ref, mask_pred, spacing)
        theirs = {
            "dice": surface_distance.compute_dice_coefficient(mask_ref, mask_pred),
            "nsd": surface_distance.compute_surface_dice_at_tolerance(dists, 3),
            "hd": surface_distance.compute_robust_hausdorff(dists, 100),
            "hd95": surface_distance.compute_robust_hausdorff(dists, 95),
        }
        mine = ours[names[int(value)]]
        for metric, expected in theirs.items():
            got = getattr(mine, metric)
            same = got == expected if math.isinf(expected) else abs(got - expected) <= 1e-6
            compared.append((names[int(value)], metric, got, float(expected), same))
    mismatches = [c for c in compared if not c[4]]
    assert len(present) >= 40 and not mismatches, mismatches
