"""Small builders shared by tests: NIfTI files with chosen grids and contents."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def ct_array(shape=(20, 18, 16), seed=0) -> np.ndarray:
    """CT-like int16: air border, soft tissue inside, a bone block."""
    rng = np.random.default_rng(seed)
    a = np.full(shape, -1000, dtype=np.int16)
    sl = tuple(slice(2, s - 2) for s in shape)
    a[sl] = 40
    a[4:8, 4:8, 4:8] = 700
    return (a + rng.integers(-5, 5, size=shape)).astype(np.int16)


def write_nifti(path, data, affine=None) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return str(path)


def spacing_affine(spacing, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff
