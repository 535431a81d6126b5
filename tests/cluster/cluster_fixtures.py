"""Fixtures and helpers for tests that run Snakemake on the local SLURM cluster (tests/cluster/slurm-up.sh).

Every helper takes the working directory, and optionally the Snakefile and the profile, as parameters: the toy DAG
in tests/cluster/toy/ and the real CADS DAG (Snakefile of the repository, on tests/cluster/small_cohort.yaml) use them.

What counts as proof that work went through SLURM, here:
  - SLURM's job-completion record (jobcomp/filetxt, JobCompLoc in `scontrol show config`): one line per finished
    job with its state and working directory, kept with or without an accounting database;
  - `scontrol show job` while the controller still holds the job (MinJobAge, 600 s on the CI cluster): partition,
    the plugin's comment (rule_<name>...), GPU requests;
  - the executor plugin's per-job logs under logs/slurm/ (profiles/slurm-ci keeps successful ones too);
  - what the job itself saw ($SLURM_JOB_ID, CUDA_VISIBLE_DEVICES) when the workflow writes it into its outputs.

Snakemake always runs under `timeout -s INT`: SIGINT makes it cancel its SLURM jobs and exit, SIGTERM would make it
wait for them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_PROFILE = REPO_ROOT / "profiles" / "slurm-ci"
SLURM_LOGDIR = "logs/slurm"  # slurm-logdir of profiles/slurm-ci, relative to the working directory
SNAKEMAKE_TIMEOUT_S = 300  # hang guard per Snakemake call, not a performance expectation
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}

_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)
_KEY_VALUE = re.compile(r"(\w+)=(\S*)")


# --- is there a cluster? ----------------------------------------------------------------------------------------


def cluster_unavailable_reason() -> str | None:
    """Why the local SLURM cluster cannot take jobs, or None when it can."""
    if shutil.which("sinfo") is None:
        return "no SLURM client tools (sinfo not found); bring a cluster up with tests/cluster/slurm-up.sh"
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld does not answer; run tests/cluster/slurm-up.sh"
    if probe.returncode != 0:
        return f"SLURM cluster not up ({probe.stderr.strip()}); run tests/cluster/slurm-up.sh"
    states = set(probe.stdout.split())
    if not states & USABLE_NODE_STATES:
        return f"no SLURM node can take jobs (node states: {sorted(states) or 'none'})"
    return None


@dataclass(frozen=True)
class SlurmCluster:
    """The running local cluster, read through SLURM's own commands and records."""

    jobcomp_log: Path | None

    @classmethod
    def discover(cls) -> SlurmCluster:
        config = _scontrol_config()
        location = config.get("JobCompLoc", "")
        uses_filetxt = config.get("JobCompType", "") == "jobcomp/filetxt"
        return cls(jobcomp_log=Path(location) if uses_filetxt and location else None)

    def finished_job(self, job_id: str, wait_s: float = 20.0) -> dict[str, str]:
        """The job-completion record of a finished job (JobState, WorkDir, Partition, ...).

        slurmctld appends the record when the job ends, which can be a moment after Snakemake saw the end.
        """
        if self.jobcomp_log is None:
            pytest.skip("the cluster writes no job-completion record (JobCompType is not jobcomp/filetxt)")
        deadline = time.monotonic() + wait_s
        while True:
            record = _jobcomp_record(self.jobcomp_log, job_id)
            if record is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert record is not None, f"SLURM has no completion record of job {job_id} in {self.jobcomp_log}"
        return record

    def final_states(self, job_ids) -> dict[str, str]:
        """SLURM job id -> the state SLURM recorded when the job ended (COMPLETED, FAILED, CANCELLED, ...)."""
        return {job_id: self.finished_job(job_id)["JobState"] for job_id in job_ids}

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` fields of a job the controller still knows (up to MinJobAge after its end)."""
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=20)
        assert shown.returncode == 0, f"scontrol does not know job {job_id}: {shown.stderr.strip()}"
        return dict(_KEY_VALUE.findall(shown.stdout))

    def gpus_on_nodes(self) -> int:
        """GPUs (GRES gpu) the cluster's nodes declare."""
        listing = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %G"], capture_output=True, text=True, timeout=20)
        per_node = dict(line.split(maxsplit=1) for line in listing.stdout.splitlines() if line.strip())
        return sum(int(n) for gres in per_node.values() for n in re.findall(r"gpu(?::[A-Za-z]\w*)*:(\d+)", gres))

    def accounting_works(self) -> bool:
        """Whether `sacct` answers (slurmdbd is up), i.e. the plugin's default status command can work."""
        if shutil.which("sacct") is None:
            return False
        probe = subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True, text=True, timeout=20)
        return probe.returncode == 0

    def cancel(self, job_id: str) -> None:
        subprocess.run(["scancel", job_id], check=True, timeout=60)


def _scontrol_config() -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
    config = {}
    for line in shown.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def _jobcomp_record(jobcomp_log: Path, job_id: str) -> dict[str, str] | None:
    if not jobcomp_log.exists():
        return None
    found = None
    for line in jobcomp_log.read_text().splitlines():
        fields = dict(_KEY_VALUE.findall(line))
        if fields.get("JobId") == job_id:
            found = fields  # the last record wins (a requeued job ends more than once)
    return found


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The local SLURM cluster; skips the test where none is up (e.g. a laptop without SLURM), but fails it where
    run_tests.sh brought one up (CADS_REQUIRE_SLURM=1): a cluster that came up and then vanished is a failure."""
    reason = cluster_unavailable_reason()
    if reason and os.environ.get("CADS_REQUIRE_SLURM") == "1":
        pytest.fail(f"CADS_REQUIRE_SLURM=1 but the local SLURM is unavailable: {reason}")
    if reason:
        pytest.skip(reason)
    return SlurmCluster.discover()


# --- running Snakemake ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnakemakeRun:
    """A finished Snakemake call: exit status and everything it printed."""

    command: list[str]
    returncode: int
    output: str

    def submitted_jobs(self) -> dict[str, Path]:
        """SLURM job id -> the plugin's log file, for every sbatch submission of this run."""
        return {job_id: Path(log) for job_id, log in _SUBMITTED.findall(self.output)}

    def submitted_by_rule(self, workdir: Path, logdir: str = SLURM_LOGDIR) -> dict[str, tuple[str, str]]:
        """SLURM job id -> (rule, wildcards) for every sbatch submission of this run, read from where the plugin put
        the job's log: <logdir>/rule_<rule>/<wildcards>/<id>.log (wildcards '' for a rule without any). A group job
        (<logdir>/group_<name>/...) gives ('group_<name>', ...)."""
        jobs = {}
        for job_id, log in self.submitted_jobs().items():
            top, *wildcards, _ = log.relative_to(workdir / logdir).parts
            jobs[job_id] = (top.removeprefix("rule_"), "/".join(wildcards))
        return jobs

    def ran_locally(self) -> list[str]:
        """Rules Snakemake ran itself instead of submitting them (its 'localrule <name>:' lines)."""
        return re.findall(r"^localrule (\w+):", self.output, re.M)

    def job_stats(self) -> dict[str, int]:
        """Rule -> jobs this run planned, from the `Job stats` table Snakemake prints before it starts."""
        return parse_job_stats(self.output)

    def explain(self) -> str:
        """The command and the end of its output, for assertion messages."""
        return f"$ {' '.join(self.command)}\n(exit {self.returncode})\n{self.output[-6000:]}"


class SnakemakeProcess:
    """Snakemake started in the background; `wait()` gives the SnakemakeRun."""

    def __init__(self, command: list[str], workdir: Path, log: Path):
        self.command = command
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as sink:
            self._process = subprocess.Popen(
                command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, env=_snakemake_env()
            )

    def running(self) -> bool:
        return self._process.poll() is None

    def interrupt(self) -> None:
        """Ctrl-C: Snakemake cancels its SLURM jobs and exits (timeout passes SIGINT on)."""
        if self.running():
            self._process.send_signal(signal.SIGINT)

    def wait(self) -> SnakemakeRun:
        # timeout -k 30 ends Snakemake by itself; this bound only catches a stuck `timeout`
        returncode = self._process.wait(timeout=SNAKEMAKE_TIMEOUT_S + 60)
        return SnakemakeRun(self.command, returncode, self.log.read_text())

    def output_so_far(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def snakemake_command(
    *args: str,
    snakefile: Path | None = None,
    profile: Path = CI_PROFILE,
    timeout_s: int = SNAKEMAKE_TIMEOUT_S,
) -> list[str]:
    """`timeout -s INT -k 30 <s> python -m snakemake --profile <profile> [--snakefile <f>] <args>`."""
    command = ["timeout", "-s", "INT", "-k", "30", str(timeout_s), sys.executable, "-m", "snakemake"]
    command += ["--profile", str(profile)]
    if snakefile is not None:
        command += ["--snakefile", str(snakefile)]
    return command + list(args)


def start_snakemake(
    workdir: Path,
    *args: str,
    snakefile: Path | None = None,
    profile: Path = CI_PROFILE,
    timeout_s: int = SNAKEMAKE_TIMEOUT_S,
) -> SnakemakeProcess:
    """Start Snakemake in `workdir` (relative paths of the workflow and the profile's slurm-logdir land there)."""
    command = snakemake_command(*args, snakefile=snakefile, profile=profile, timeout_s=timeout_s)
    runs = workdir.parent / f"{workdir.name}-snakemake-output"
    log = runs / f"{len(list(runs.glob('*.log'))) if runs.exists() else 0:02d}.log"
    return SnakemakeProcess(command, workdir, log)


def run_snakemake(
    workdir: Path,
    *args: str,
    snakefile: Path | None = None,
    profile: Path = CI_PROFILE,
    timeout_s: int = SNAKEMAKE_TIMEOUT_S,
) -> SnakemakeRun:
    """Run Snakemake in `workdir` to the end."""
    return start_snakemake(workdir, *args, snakefile=snakefile, profile=profile, timeout_s=timeout_s).wait()


def planned_jobs(
    workdir: Path, *args: str, snakefile: Path | None = None, profile: Path = CI_PROFILE
) -> dict[str, int]:
    """Rule -> number of jobs a dry run with `args` would execute ({} when nothing is to be done)."""
    run = run_snakemake(workdir, "--dry-run", "--quiet", "rules", *args, snakefile=snakefile, profile=profile)
    assert run.returncode == 0, run.explain()
    return parse_job_stats(run.output)


def parse_job_stats(text: str) -> dict[str, int]:
    """The `job count` table Snakemake prints (Job stats), without the total row."""
    counts: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        cells = line.split()
        if cells == ["job", "count"]:
            in_table, counts = True, {}
        elif in_table and cells and set(cells[0]) == {"-"}:
            continue
        elif in_table and len(cells) == 2 and cells[1].isdigit():
            if cells[0] == "total":
                in_table = False
            else:
                counts[cells[0]] = int(cells[1])
        elif in_table:
            in_table = False
    return counts


def slurm_logs(workdir: Path, logdir: str = SLURM_LOGDIR) -> dict[str, Path]:
    """SLURM job id -> the plugin's log file under <workdir>/<logdir> ({rule_X|group_X}/<wildcards>/<id>.log)."""
    root = workdir / logdir
    return {log.stem: log for log in root.rglob("*.log")} if root.exists() else {}


def wait_for_path(path: Path, process: SnakemakeProcess, wait_s: float = SNAKEMAKE_TIMEOUT_S) -> None:
    """Block until `path` exists; fail if Snakemake ends first or the hang guard runs out."""
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if not process.running():
            pytest.fail(f"Snakemake ended before {path} appeared:\n{process.wait().explain()}")
        if time.monotonic() > deadline:
            process.interrupt()
            pytest.fail(f"{path} did not appear; Snakemake output so far:\n{process.output_so_far()[-6000:]}")
        time.sleep(0.3)


def _snakemake_env() -> dict[str, str]:
    """The test's environment for Snakemake and, through sbatch --export=ALL, for its jobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.pop("CUDA_VISIBLE_DEVICES", None)  # GPUs a job sees must come from SLURM, not from the caller
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
