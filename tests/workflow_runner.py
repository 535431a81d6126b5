"""Run the real workflow (Snakefile of this repository) in a scratch working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def write_config(workdir: Path, **overrides) -> Path:
    """A config file that points the sheet, registry and demo cohort into `workdir`."""
    demo = workdir / "demo"
    cfg = {
        "sheet": str(demo / "volumes.tsv"),
        "registry": str(demo / "registry.yaml"),
        "demo": {"enabled": True, "directory": str(demo)},
    }
    cfg.update(overrides)
    path = workdir / "test_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, *args: str, config: Path | None = None, timeout: int = 3000, check=True):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", "--nolock",
           "--scheduler", "greedy"]  # as profiles/local: the ILP scheduler's solver takes CPU from the jobs
    cmd += list(args)
    if config is not None:  # last: --configfile takes several values and would swallow targets after it
        cmd += ["--configfile", str(config)]
    # The environment as a user's shell has it, without this venv on PATH: shell rules must find their interpreter
    # and the workflow's code themselves (rules/common.smk: shell_prefix).
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {**os.environ, "PATH": path or "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def dry_run_jobs(stdout: str) -> dict[str, list[dict]]:
    """rule name -> its jobs as {"input": [...], "output": [...], "shell": str}, from `snakemake -n -p` output."""
    jobs: dict[str, list[dict]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("rule "):
            current = {"input": [], "output": [], "shell": ""}
            jobs.setdefault(line[5:].rstrip(":"), []).append(current)
        elif current is not None and line.strip().startswith(("input:", "output:")):
            key, _, value = line.strip().partition(": ")
            current[key] = value.split(", ")
        elif current is not None and "python -m cadsflow" in line:
            current["shell"] = line.strip()
    return jobs
