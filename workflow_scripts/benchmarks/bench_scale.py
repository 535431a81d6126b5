"""Benchmark: does the DAG hold at the paper's scale? (not a test; prints figures)

Writes a synthetic sheet of 22,022 volumes over 40 sources (no images needed: missing files become quarantine
lines, so the DAG is complete without data), dry-runs the real workflow on it, and prints the dry-run wall time,
peak memory, job counts per rule and in total, and the SLURM submissions the full run would make. For
comparison it dry-runs, in the same process, a naive design of the same stages with one job per volume and
group (--naive-volumes scales that one down; its figures are then also extrapolated linearly).

Usage: python workflow_scripts/benchmarks/bench_scale.py [--volumes 22022] [--naive-volumes 22022] [--skip-naive]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
N_SOURCES = 40
GROUPS = range(551, 560)

NAIVE_SNAKEFILE = '''
import csv
VOLS = [r["volume_id"] for r in csv.DictReader(open(config["sheet"]), delimiter="\\t")]
GROUPS = list(range(551, 560))
rule all:
    input: "eval/summary.tsv"
rule standardize:
    input: lambda wc: []
    output: "std/{v}.nii.gz"
    shell: "touch {output}"
rule pseudolabel:
    input: "std/{v}.nii.gz"
    output: "pl/{g}/{v}.nii.gz"
    shell: "touch {output}"
rule assemble:
    input: expand("pl/{g}/{{v}}.nii.gz", g=GROUPS)
    output: "final/{v}.nii.gz"
    shell: "touch {output}"
rule evaluate:
    input: expand("final/{v}.nii.gz", v=VOLS)
    output: "eval/summary.tsv"
    shell: "touch {output}"
'''


REGISTRY = REPO / "config" / "sources" / "cads_collection.yaml"


def source_names() -> list[str]:
    """The 40 sources of Table 1 (config/sources/cads_collection.yaml), so the paper preset's training table holds."""
    import yaml

    names = list(yaml.safe_load(REGISTRY.read_text())["sources"])
    return (names * (N_SOURCES // len(names) + 1))[:N_SOURCES]


def write_sheet(path: Path, n: int) -> None:
    lines = ["volume_id\tsource\timage\tlabel\tsplit"]
    names = source_names()
    for i in range(n):
        source = names[i % N_SOURCES]
        labelled = (i // N_SOURCES) % 5 == 0  # ~21% of the collection carries labels (Online Methods 2.1)
        split = "test" if (i // N_SOURCES) % 50 == 0 else ("train_gt" if labelled else "train_unlabelled")
        label = f"/data/{source}/labels/{i}.nii.gz" if labelled else ""
        lines.append(f"{source}_case{i:05d}\t{source}\t/data/{source}/images/{i}.nii.gz\t{label}\t{split}")
    path.write_text("\n".join(lines) + "\n")


def _dry_run(cmd, queue):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    queue.put((proc.returncode, seconds, peak_mb, proc.stdout + proc.stderr))


def dry_run(cmd):
    """Run one dry run in a fresh process so that its peak memory is measured alone."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_dry_run, args=(cmd, queue))
    proc.start()
    rc, seconds, peak, out = queue.get()
    proc.join()
    if rc != 0:
        raise SystemExit(f"dry run failed ({rc}):\n{out[-4000:]}")
    return seconds, peak, parse_counts(out)


def parse_counts(text: str) -> dict[str, int]:
    counts, in_table = {}, False
    for line in text.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def local_rules() -> set[str]:
    found = set()
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        # one line (localrules: a, b) or snakefmt's block (localrules:\n    a,\n    b,)
        for m in re.finditer(r"^localrules:[ \t]*((?:.*\n)(?:[ \t]+\S.*\n)*)", smk.read_text(), re.M):
            found |= {r.strip() for r in m.group(1).replace("\n", ",").split(",") if r.strip()}
    return found | {"all"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=22022)
    parser.add_argument("--naive-volumes", type=int, default=22022)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sheet = tmp / "volumes.tsv"
        write_sheet(sheet, args.volumes)
        cfg = tmp / "scale.yaml"
        cfg.write_text(
            f"sheet: {sheet}\nregistry: {REGISTRY}\npreset: paper\n"
            f"demo: {{enabled: false, directory: {tmp / 'demo'}}}\n"
        )
        cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp), "-n", "--quiet", "rules",
               "--configfile", str(cfg)]
        seconds, peak, counts = dry_run(cmd)
        local = local_rules()
        submissions = sum(n for rule, n in counts.items() if rule not in local)
        print(f"CADS DAG, {args.volumes} volumes over {N_SOURCES} sources:")
        print(f"  dry run {seconds:.1f} s, peak memory {peak:.0f} MiB")
        for rule, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"    {rule:<28} {n:>7}")
        print(f"  jobs in total {sum(counts.values())}; SLURM submissions {submissions} (local rules: {sorted(local)})")
        if args.skip_naive:
            return
        naive_sheet = tmp / "naive.tsv"
        write_sheet(naive_sheet, args.naive_volumes)
        naive = tmp / "Naive.smk"
        naive.write_text(NAIVE_SNAKEFILE)
        ncmd = [SNAKEMAKE, "-s", str(naive), "--directory", str(tmp / "naive"), "-n", "--quiet", "rules",
                "--config", f"sheet={naive_sheet}"]
        nseconds, npeak, ncounts = dry_run(ncmd)
        total = sum(ncounts.values())
        scale = args.volumes / args.naive_volumes
        print(f"naive DAG (one job per volume and group), {args.naive_volumes} volumes:")
        print(f"  dry run {nseconds:.1f} s, peak memory {npeak:.0f} MiB, jobs {total}, submissions {total - 1}")
        if scale != 1:
            print(f"  extrapolated to {args.volumes} volumes: ~{nseconds * scale:.0f} s, ~{int(total * scale)} jobs")
        print(f"ratio naive/CADS: dry run {nseconds * scale / seconds:.1f}x, submissions "
              f"{(total - 1) * scale / max(submissions, 1):.0f}x")


if __name__ == "__main__":
    main()
