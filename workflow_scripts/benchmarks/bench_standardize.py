"""Benchmark: standardizing a 512x512x400 int16 CT at 0.8x0.8x1.25 mm (not a test; prints figures).

Compares, each in a fresh process so peak memory is its own:
  load+save       read the NIfTI and write it back unchanged (the I/O floor)
  standardize     cadsflow.standardize (validation, RAS, 1.5 mm cubic, label-free)
  scipy zoom o3   load, scipy.ndimage.zoom(order=3) to 1.5 mm (what the CADS code uses), save
Usage: python workflow_scripts/benchmarks/bench_standardize.py [--shape 512 512 400]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SPACING = (0.8, 0.8, 1.25)


def make_ct(path: Path, shape) -> None:
    rng = np.random.default_rng(0)
    g = np.indices(shape, dtype=np.float32)
    c = [(s - 1) / 2 for s in shape]
    body = ((g[0] - c[0]) / (0.45 * shape[0])) ** 2 + ((g[1] - c[1]) / (0.35 * shape[1])) ** 2 <= 1
    del g
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct += rng.integers(-20, 20, size=shape, dtype=np.int16)
    aff = np.diag([*SPACING, 1.0])
    nib.save(nib.Nifti1Image(ct, aff), str(path))


def run_load_save(src, dst):
    img = nib.load(src)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), dst)


def run_standardize(src, dst):
    from cadsflow.standardize import standardize_volume

    standardize_volume("bench", src, "", Path(dst).with_suffix("").with_suffix(""))


def run_zoom(src, dst):
    from scipy import ndimage

    img = nib.load(src)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    zoom = [z / 1.5 for z in img.header.get_zooms()]
    out = ndimage.zoom(data, zoom, order=3)
    nib.save(nib.Nifti1Image(np.rint(out).astype(np.int16), np.diag([1.5, 1.5, 1.5, 1.0])), dst)


RUNNERS = {"load+save": run_load_save, "standardize": run_standardize, "scipy zoom o3": run_zoom}


def _child(name, src, dst, queue):
    # Each variant runs in a fresh spawned process: Linux keeps ru_maxrss across fork/exec, so the parent
    # stays small (the input is written by a child too) and each figure is that variant's own peak.
    t0 = time.perf_counter()
    RUNNERS[name](src, dst)
    seconds = time.perf_counter() - t0
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(name, src, dst, target=_child):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(name, src, dst, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[512, 512, 400])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = str(Path(tmp) / "ct.nii.gz")
        proc = mp.get_context("spawn").Process(target=make_ct, args=(Path(src), tuple(args.shape)))
        proc.start()
        proc.join()
        print(f"input {tuple(args.shape)} int16 at {SPACING} mm -> 1.5 mm isotropic")
        rows = {}
        for name in ("load+save", "standardize", "scipy zoom o3"):
            rows[name] = measure(name, src, str(Path(tmp) / f"out_{name.split()[0]}.nii.gz"))
            print(f"  {name:<14} {rows[name][0]:7.2f} s   peak RSS {rows[name][1]:7.0f} MiB")
        base = rows["load+save"][0]
        print(f"standardize / load+save = {rows['standardize'][0] / base:.2f}x;"
              f" scipy zoom o3 / standardize = {rows['scipy zoom o3'][0] / rows['standardize'][0]:.2f}x")


if __name__ == "__main__":
    main()
