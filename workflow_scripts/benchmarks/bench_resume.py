"""Kill and resume (issue 17, item 5): the demo DAG killed with SIGKILL mid-job, resumed, compared with a clean run.

Runs the repository's Snakefile (a snapshot of the working tree taken at the start, so that edits during the run
do not reach it) on the embedded demo cohort in a scratch folder twice, at the same absolute path (so that paths
written into outputs agree): once uninterrupted (the reference), and once where the whole snakemake
process group (snakemake and every job it started) is killed with SIGKILL at three points, in DAG order:

- batch: while a standardize or gt_batch job is writing its batch (some but not all of its volume folders exist);
- train: inside a train_specialist job, a random delay (0.2-3 s) after nnU-Net logged that epoch 0 began;
- pseudolabel: inside a pseudolabel_shard job, after a random number of its volumes were predicted.

After each kill it lists what the kill left (Snakemake's lock, temporary files of interrupted atomic writes, shard
`.running` markers), runs `snakemake --unlock`, dry-runs the rerun (`-n --rerun-incomplete`) and prints what it
plans to redo: the jobs killed mid-run, and any job that had finished before the kill (there should be none); then
it reruns with `--rerun-incomplete` until the next kill point or the end of the DAG.

Finally it compares results/ of the resumed run with the reference. The same file set is expected everywhere
(nnU-Net's time-stamped training log names are normalized). Stages upstream of training (standardize, quarantine,
gt, the atlas, nnU-Net raw datasets and plans) are deterministic and compared byte for byte. Stages downstream of
training are not bit-reproducible on CPU (nnU-Net samples patches and augments without a fixed seed, and thread
scheduling changes float sums), so for them the benchmark reports, without asserting: trained weights (largest
difference relative to the largest weight), pseudo-label and face-blurred maps (same shape, affine and dtype;
fraction of identical voxels), shard reports (same statuses) and evaluation scores (same rows; largest score
difference). For the killed shard it reports how many volumes the rerun kept from the interrupted run and how many it
predicted again: each shard job declares its folder of maps (results/pseudolabels/<G>/shard_<k>/), which Snakemake
deletes before the rerun, so a killed shard predicts all its volumes again (kept 0; the fingerprint skip serves only
a shard job rerun by hand); the shards that finished are other jobs with their own folders and are not redone (the
plan above lists none of them).

Usage (from the repository root; about 30-40 min on 2 loaded cores, `--quick` stops at pseudolabel_status):

    nice -n 10 .venv/bin/python workflow_scripts/benchmarks/bench_resume.py [--quick] [--seed 17] [--keep]

`--targets`/`--until`/`--kills` run a subset, e.g. `--targets results/pseudolabels/559/shard_0.tsv` for one shard;
`--compare REFERENCE RESUMED` compares two kept working directories (`--keep`) again.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the tests' way of running the real workflow in a scratch folder
sys.path.insert(0, str(REPO / "workflow_scripts"))

from workflow_runner import SNAKEMAKE, write_config  # noqa: E402

# The kill points: which rules count, in DAG order (data; add a point here and a condition in KillPoint.check)
KILL_RULES = {
    "batch": ("standardize", "gt_batch"),
    "train": ("train_specialist",),
    "pseudolabel": ("pseudolabel_shard",),
}
# nnU-Net's trainer logs this line when its first epoch starts (nnUNetTrainer.on_epoch_start: f"Epoch {epoch}"),
# unbuffered into its own training log in the model folder (the job's log gets it from a buffered stdout)
TRAINING_STARTED = "Epoch 0"
NNUNET_TRAINING_LOGS = "results/specialists/models/Dataset{group}_*/*/fold_*/training_log_*.txt"
# uniform random delay after TRAINING_STARTED: the smoke preset's 2 epochs x 5 iterations took 7 s in all here
# (load average 8 on 2 cores); a longer delay misses every training
TRAIN_KILL_DELAY_S = (0.2, 3.0)
# cadsflow.pseudolabel.infer logs one such line per predicted volume
PREDICTED = re.compile(r"volume \S+: group \d+ predicted in ")
KEPT = "kept from the interrupted run"
PSEUDOLABEL_KILL_AFTER = (1, 4)  # uniform random number of predicted volumes before the kill (shards hold 8)
RUNNING_MARKER_SUFFIX = ".running"  # cadsflow.pseudolabel.infer.RUNNING_SUFFIX

# How results/ is compared, first matching prefix wins: deterministic stages byte for byte; stages downstream of
# training with the tolerances described in the module docstring.
STAGES = [
    ("results/standardized/", "standardize", "bytes"),
    ("results/quarantine/", "quarantine", "bytes"),
    ("results/gt/", "gt", "bytes"),
    ("results/atlas/", "gt atlas", "bytes"),
    ("results/specialists/nnUNet_raw/", "nnU-Net raw datasets", "bytes"),
    ("results/specialists/nnUNet_preprocessed/", "nnU-Net plans+preprocessed", "bytes"),
    ("results/specialists/models/", "trained models", "model"),
    ("results/pseudolabels/", "pseudo-labels", "labels"),
    ("results/anonymized/", "face blur (uses 553 pseudo-labels)", "labels"),
    ("results/evaluation/", "evaluation", "scores"),
    ("results/", "other", "bytes"),
]
# Files whose bytes may differ while their content is the same: (name ending, why, content reader); the readers
# are defined below. nnU-Net's blosc2 frames differ at byte 235 for equal arrays; the stage markers record the
# job's seconds.
TIMING_KEYS = ("seconds",)
SAME_CONTENT = [
    (".b2nd", "blosc2 array equal, frame header differs", lambda p: _b2nd_array(p)),
    (".planned", "marker equal but for its seconds", lambda p: _json_without_timing(p)),
    (".done", "marker equal but for its seconds", lambda p: _json_without_timing(p)),
    (".gz", "gzip payload equal", lambda p: gzip.decompress(p.read_bytes())),
]
# Evaluation tables: columns that say how a row came out (not which row it is), and the scores compared
OUTCOME_COLUMNS = ("status", "reason")
SCORE_COLUMNS = ("dice", "nsd", "mean_dice", "mean_nsd")
# File names that differ between two identical runs by design
NAME_NORMALIZATION = [(re.compile(r"training_log_[\d_]+\.txt$"), "training_log_<time>.txt")]
# atomic_path/atomic_dir (cadsflow.atomic) write ".<name>.<8 random chars>[suffix]" beside the final name
ATOMIC_TEMP = re.compile(r"^\.[^./]+\.[A-Za-z0-9_]{8}")

JOB_START = re.compile(r"^(?:local)?rule (\S+):$")
JOB_FIELD = re.compile(r"^    (\w+): (.*)$")
JOB_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\S+)\)")


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.compare:
        compare_trees(*map(Path, args.compare))
        return 0
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench_resume_", dir=args.scratch))
    run_dir, ref_dir = scratch / "run", scratch / "reference"
    kills = [k for k in args.kills.split(",") if k]
    print(f"bench_resume: scratch {scratch}; kill points {kills}; seed {args.seed}; "
          f"targets {args.targets or ['all']}; until {args.until or '-'}; cores {args.cores}")
    try:
        workflow = REPO if args.live else snapshot_workflow(scratch / "workflow")
        run_dir.mkdir()
        config = write_config(run_dir)
        runner = Runner(workflow, run_dir, config, args.cores, args.targets, args.until, args.timeout)

        started = time.monotonic()
        reference = runner.run("reference", [])
        ref_seconds = time.monotonic() - started
        if reference.returncode != 0:
            raise SystemExit(f"reference run failed ({reference.returncode}): {reference.out_file}")
        print(f"\nreference (uninterrupted): {ref_seconds:.0f} s, {len(reference.jobs.started)} jobs")
        os.rename(run_dir, ref_dir)

        run_dir.mkdir()
        write_config(run_dir)
        points = [KillPoint(name, rng, ref_dir) for name in kills]
        resumed_seconds, fired = resume_with_kills(runner, points)
        print(f"\nkilled and resumed: {resumed_seconds:.0f} s in all ({len(fired)} kills), reference {ref_seconds:.0f} s:"
              f" {resumed_seconds - ref_seconds:+.0f} s ({resumed_seconds / ref_seconds:.2f}x)")
        for point in points:
            if point.fired is None:
                print(f"kill point {point.name}: never reached (no {'/'.join(KILL_RULES[point.name])} job "
                      "met its condition)")
        for point in fired:
            if point.name == "pseudolabel":
                report_kept_volumes(run_dir, point)

        print("\ncomparison of results/ with the uninterrupted run")
        compare_trees(ref_dir, run_dir)
    finally:
        if args.keep:
            print(f"\nkept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def resume_with_kills(runner: Runner, points: list[KillPoint]) -> tuple[float, list[KillPoint]]:
    """Run, kill at the first pending point that is reached, unlock, dry-run and rerun; repeat to the DAG's end."""
    fired: list[KillPoint] = []
    finished: set[tuple[str, str]] = set()  # jobs finished in any attempt so far
    total = 0.0
    flags: list[str] = []
    for attempt in range(1, len(points) + 2):
        pending = [p for p in points if p.fired is None]
        started = time.monotonic()
        result = runner.run(f"attempt {attempt}", flags, pending)
        total += time.monotonic() - started
        if result.killed_by is None:
            if result.returncode != 0:
                raise SystemExit(f"attempt {attempt} failed ({result.returncode}): {result.out_file}")
            print(f"\nattempt {attempt}{' (--rerun-incomplete)' if flags else ''}: finished the DAG in "
                  f"{time.monotonic() - started:.0f} s, {len(result.jobs.started)} jobs")
            return total, fired
        point = result.killed_by
        fired.append(point)
        finished |= {result.jobs.started[i].key for i in result.jobs.finished if i in result.jobs.started}
        print(f"\nkill {len(fired)} ({point.name}): SIGKILL to process group {result.pgid} at "
              f"{result.seconds:.1f} s of attempt {attempt}: {point.fired}")
        running = result.jobs.running()
        print(f"  jobs running at the kill ({len(running)}): " + "; ".join(j.label() for j in running))
        print(f"  jobs finished before the kill in this attempt: {len(result.jobs.finished)}"
              f"; processes left alive by the kill: {result.survivors}")
        describe_leftovers(runner.workdir)
        started = time.monotonic()
        runner.unlock()
        plan = runner.dry_run(["--rerun-incomplete"])
        total += time.monotonic() - started
        describe_plan(plan, result.jobs.running(), finished)
        flags = ["--rerun-incomplete"]
    raise SystemExit("more attempts than kill points: a kill point fired twice")


@dataclass
class Job:
    rule: str
    jobid: int
    fields: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.fields.get("output", "").split(", ")[0]

    @property
    def log(self) -> str:
        return self.fields.get("log", "").split(", ")[0]

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.fields.get("output", "")

    def label(self) -> str:
        wildcards = self.fields.get("wildcards", "")
        return f"{self.rule} {wildcards}" if wildcards else self.rule


class JobStream:
    """Snakemake's job blocks ("rule X:" / "localrule X:" and indented fields) and "Finished jobid" lines, read
    incrementally from a growing log of its output."""

    def __init__(self) -> None:
        self.started: dict[int, Job] = {}
        self.finished: set[int] = set()
        self._partial = ""
        self._current: Job | None = None
        self._pending_rule: str | None = None

    def feed(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def running(self) -> list[Job]:
        return [job for jobid, job in sorted(self.started.items()) if jobid not in self.finished]

    def _line(self, line: str) -> None:
        if m := JOB_START.match(line):
            self._pending_rule, self._current = m.group(1), None
            return
        if m := JOB_FINISHED.match(line):
            self.finished.add(int(m.group(1)))
        if self._pending_rule is None and self._current is None:
            return
        if not (m := JOB_FIELD.match(line)):
            self._pending_rule, self._current = None, None
            return
        key, value = m.groups()
        if self._current is None:
            self._current = Job(self._pending_rule, -1)
        self._current.fields[key] = value
        if key == "jobid":
            self._current.jobid = int(value)
            self.started[self._current.jobid] = self._current


class KillPoint:
    """One place to kill the run; `check` returns what it saw when the kill is due, else None."""

    def __init__(self, name: str, rng: random.Random, reference: Path) -> None:
        if name not in KILL_RULES:
            raise SystemExit(f"unknown kill point {name!r}; known: {', '.join(KILL_RULES)}")
        self.name, self.rules, self.reference = name, KILL_RULES[name], reference
        self.delay = rng.uniform(*TRAIN_KILL_DELAY_S)
        self.after_volumes = rng.randint(*PSEUDOLABEL_KILL_AFTER)
        self.fired: str | None = None
        self.job: Job | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the jobs of an earlier attempt (job ids restart with every snakemake run)."""
        self._seen: dict[int, tuple[float, int]] = {}  # jobid -> (first seen, log size then)
        self._seen_wall: dict[int, float] = {}
        self._armed: dict[int, float] = {}

    def check(self, job: Job, workdir: Path, now: float) -> str | None:
        if job.rule not in self.rules:
            return None
        first_seen, log_offset = self._seen.setdefault(job.jobid, (now, _size(workdir / job.log)))
        since = self._seen_wall.setdefault(job.jobid, time.time() - 1.0)
        if self.name == "batch":
            out = workdir / job.output
            done, total = _volume_folders(out), _volume_folders(self.reference / job.output)
            if 0 < done < total:
                return f"{job.label()}: {done} of {total} volume folders written"
        elif self.name == "train":
            if job.jobid not in self._armed and _training_started(workdir, job, since):
                self._armed[job.jobid] = now + self.delay
            if job.jobid in self._armed and now >= self._armed[job.jobid]:
                return (f"{job.label()}: {now - first_seen:.0f} s into the job, {self.delay:.1f} s after its log "
                        f"said {TRAINING_STARTED!r}")
        elif self.name == "pseudolabel":
            predicted = len(PREDICTED.findall(_read(workdir / job.log, log_offset)))
            if predicted >= self.after_volumes:
                return f"{job.label()}: after {predicted} volumes predicted"
        return None


@dataclass
class RunResult:
    returncode: int
    jobs: JobStream
    out_file: Path
    seconds: float
    pgid: int
    killed_by: KillPoint | None = None
    survivors: int = 0


class Runner:
    """snakemake on the repository's Snakefile in `workdir`, as a user's shell runs it (no venv on PATH)."""

    def __init__(self, workflow: Path, workdir: Path, config: Path, cores: int, targets: list[str],
                 until: list[str], timeout: int) -> None:
        self.workdir, self.config, self.timeout = workdir, config, timeout
        self.base = [SNAKEMAKE, "-s", str(workflow / "Snakefile"), "--directory", str(workdir),
                     "--cores", str(cores)]
        self.selection = list(targets) + (["--until", *until] if until else [])
        self.logs = workdir.parent / "snakemake_output"
        self.logs.mkdir(exist_ok=True)

    def run(self, name: str, flags: list[str], points: list[KillPoint] = (), poll_s: float = 0.05) -> RunResult:
        out_file = self.logs / f"{name.replace(' ', '_')}.log"
        cmd = self.base + flags + self.selection + ["--configfile", str(self.config)]
        jobs = JobStream()
        for point in points:
            point.reset()
        started = time.monotonic()
        with open(out_file, "w") as out, open(out_file) as reader:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_user_env(),
                                    start_new_session=True)
            killed_by, survivors = None, 0
            while proc.poll() is None:
                jobs.feed(reader.read())
                now = time.monotonic()
                if now - started > self.timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise SystemExit(f"{name}: no end after {self.timeout} s ({out_file})")
                killed_by = _due(points, jobs, self.workdir, now)
                if killed_by is not None:
                    survivors = _kill_group(proc)
                    break
                time.sleep(poll_s)
            proc.wait()
            jobs.feed(reader.read() + "\n")
        return RunResult(proc.returncode, jobs, out_file, time.monotonic() - started, proc.pid, killed_by, survivors)

    def unlock(self) -> None:
        locks = self.workdir / ".snakemake" / "locks"
        left = sorted(p.name for p in locks.iterdir()) if locks.is_dir() else []
        proc = subprocess.run(self.base + ["--unlock", "--configfile", str(self.config)], capture_output=True,
                              text=True, env=_user_env(), timeout=self.timeout)
        after = list(locks.iterdir()) if locks.is_dir() else []
        print(f"  Snakemake lock left by the kill: {len(left)} file(s) in .snakemake/locks"
              f" -> snakemake --unlock (exit {proc.returncode}) -> {len(after)} left")

    def dry_run(self, flags: list[str]) -> JobStream:
        proc = subprocess.run(self.base + ["-n", *flags] + self.selection + ["--configfile", str(self.config)],
                              capture_output=True, text=True, env=_user_env(), timeout=self.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"dry run failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        jobs = JobStream()
        jobs.feed(proc.stdout + proc.stderr + "\n")
        return jobs


def snapshot_workflow(dest: Path) -> Path:
    """Copy the repository's working tree (tracked and untracked, not ignored files) to `dest`: both runs use the
    same workflow code even while the checkout changes under them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def describe_leftovers(workdir: Path) -> None:
    """Temporary files of interrupted atomic writes and shard markers that the kill left under results/."""
    results = workdir / "results"
    temps = sorted(p for p in results.rglob(".*") if ATOMIC_TEMP.match(p.name)) if results.is_dir() else []
    markers = sorted(results.rglob(f"*{RUNNING_MARKER_SUFFIX}")) if results.is_dir() else []
    shown = ", ".join(str(p.relative_to(workdir)) for p in temps[:6]) + (" ..." if len(temps) > 6 else "")
    print(f"  temporary files of interrupted writes: {len(temps)}{': ' + shown if temps else ''}")
    if markers:
        print(f"  shard markers: {', '.join(str(p.relative_to(workdir)) for p in markers)}")


def describe_plan(plan: JobStream, killed_jobs: list[Job], finished: set[tuple[str, str]]) -> None:
    """What the rerun will redo, against the jobs the kill interrupted and those finished in any attempt."""
    planned = {job.key: job for job in plan.started.values() if job.rule != "all"}
    running = {job.key: job for job in killed_jobs}
    redone = [job for key, job in planned.items() if key in running]
    again = [job for key, job in planned.items() if key in finished]
    lost = [job for key, job in running.items() if key not in planned]
    rest = Counter(job.rule for key, job in planned.items() if key not in running and key not in finished)
    print(f"  rerun plan (snakemake -n --rerun-incomplete): {len(planned)} jobs")
    for job in redone:
        print(f"    redone, killed mid-run: {job.label()} (reason: {job.fields.get('reason', '?')})")
    for job in again:
        print(f"    redone although it finished before the kill: {job.label()} "
              f"(reason: {job.fields.get('reason', '?')})")
    for job in lost:
        print(f"    NOT redone although killed mid-run: {job.label()}")
    print(f"    not started before the kill: {sum(rest.values())} ("
          + ", ".join(f"{rule} {n}" for rule, n in sorted(rest.items())) + ")")


def report_kept_volumes(workdir: Path, point: KillPoint) -> None:
    """For the killed shard: volumes its rerun kept from the interrupted run against those it predicted again."""
    outputs = point.job.fields.get("output", "").split(", ")
    report = workdir / next((o for o in outputs if o.endswith(".tsv")), outputs[0])
    rows = [line.split("\t") for line in report.read_text().splitlines()[1:]] if report.is_file() else []
    reasons = Counter(KEPT if r[2].startswith(KEPT) else r[2] for r in rows if len(r) >= 3)
    log = _read(workdir / point.job.log)
    marker = Path(str(report) + RUNNING_MARKER_SUFFIX)
    print(f"\nkilled shard {point.job.label()} ({point.fired.split(': ', 1)[1]}): rerun report of {len(rows)} "
          f"volumes: kept from the interrupted run {reasons.pop(KEPT, 0)}, predicted again "
          f"{reasons.pop('predicted', 0)}" + "".join(f", {reason!r} {n}" for reason, n in reasons.items())
          + f"; the rerun's log says it found the interrupted run's marker: "
          f"{'an interrupted run of this shard left its marker' in log}; marker left after the rerun: "
          f"{marker.exists()}")


def compare_trees(ref_root: Path, new_root: Path) -> None:
    ref, new = _files(ref_root / "results"), _files(new_root / "results")
    print(f"{'stage':<36}{'ref files':>10}{'resumed':>9}{'missing':>9}{'extra':>7}  comparison")
    for prefix, stage, method in _stages_present(ref, new):
        keys_ref = {k for k in ref if _stage_of(k)[0] == prefix}
        keys_new = {k for k in new if _stage_of(k)[0] == prefix}
        both = sorted(keys_ref & keys_new)
        missing, extra = sorted(keys_ref - keys_new), sorted(keys_new - keys_ref)
        summary, details = COMPARE[method]([ref[k] for k in both], [new[k] for k in both], both)
        print(f"{stage:<36}{len(keys_ref):>10}{len(keys_new):>9}{len(missing):>9}{len(extra):>7}  {summary}")
        for key in missing[:5]:
            print(f"    missing: {key}")
        for key in extra[:5]:
            print(f"    extra:   {key}")
        for line in details:
            print(f"    {line}")


def compare_bytes(refs: list[Path], news: list[Path], keys: list[str]) -> tuple[str, list[str]]:
    """Byte identity; where bytes differ, whether the content is the same (see SAME_CONTENT) or what differs."""
    differ = [(k, a, b) for k, a, b in zip(keys, refs, news) if a.read_bytes() != b.read_bytes()]
    same_content = Counter(why for k, a, b in differ if (why := _same_content(a, b)))
    changed = [(k, a, b) for k, a, b in differ if not _same_content(a, b)]
    details = [f"differs: {k} ({_difference(a, b)})" for k, a, b in changed[:8]]
    details += [f"... and {len(changed) - 8} more" for _ in [0] if len(changed) > 8]
    summary = f"byte-identical {len(keys) - len(differ)}/{len(keys)}"
    if same_content:
        summary += "; same content " + ", ".join(f"{n} ({why})" for why, n in same_content.items())
    return summary + f"; content differs {len(changed)}", details


def compare_models(refs: list[Path], news: list[Path], keys: list[str]) -> tuple[str, list[str]]:
    import torch

    torch.set_num_threads(1)
    details, identical, json_same, json_total = [], 0, 0, 0
    for key, a, b in zip(keys, refs, news):
        if a.suffix == ".pth":
            wa = torch.load(a, map_location="cpu", weights_only=False)["network_weights"]
            wb = torch.load(b, map_location="cpu", weights_only=False)["network_weights"]
            diff = max(float((wa[n].float() - wb[n].float()).abs().max()) for n in wa)
            scale = max(float(wa[n].float().abs().max()) for n in wa)
            identical += diff == 0
            details.append(f"{key.split('/')[3]}: weights max |diff| {diff:.3g} = {diff / scale:.1%} of max |w|")
        elif a.suffix == ".json" and a.name != "debug.json":
            json_total += 1
            json_same += a.read_bytes() == b.read_bytes()
    checkpoints = sum(a.suffix == ".pth" for a in refs)
    return (f"checkpoints with identical weights {identical}/{checkpoints}; plans/dataset json byte-identical "
            f"{json_same}/{json_total} (training logs, debug.json, .done markers not compared)"), details


def compare_labels(refs: list[Path], news: list[Path], keys: list[str]) -> tuple[str, list[str]]:
    import nibabel as nib

    same_grid, fractions, by_group, reports_same, reports = 0, [], {}, 0, 0
    for key, a, b in zip(keys, refs, news):
        if key.endswith(".nii.gz"):
            ia, ib = nib.load(a), nib.load(b)
            grid = ia.shape == ib.shape and np.allclose(ia.affine, ib.affine) and \
                ia.get_data_dtype() == ib.get_data_dtype()
            same_grid += grid
            if grid:
                fraction = float((np.asarray(ia.dataobj) == np.asarray(ib.dataobj)).mean())
                fractions.append(fraction)
                by_group.setdefault(Path(key).parent.name, []).append(fraction)
        elif key.endswith(".tsv"):
            reports += 1
            reports_same += _statuses(a) == _statuses(b)
    maps = sum(k.endswith(".nii.gz") for k in keys)
    summary = (f"same shape/affine/dtype {same_grid}/{maps}; identical voxels "
               + (f"mean {np.mean(fractions):.2%}, min {min(fractions):.2%}" if fractions else "-")
               + f"; reports with the same statuses {reports_same}/{reports}")
    details = [f"{group}: {len(f)} maps, identical voxels mean {np.mean(f):.2%}, min {min(f):.2%}"
               for group, f in sorted(by_group.items())] if len(by_group) > 1 else []
    return summary, details


def compare_scores(refs: list[Path], news: list[Path], keys: list[str]) -> tuple[str, list[str]]:
    """Per table: the same rows (keyed by the identifying columns), and how far the score columns moved."""
    details, tables, same_rows = [], 0, 0
    for key, a, b in zip(keys, refs, news):
        if not key.endswith(".tsv"):
            continue
        tables += 1
        ta, tb = _score_table(a), _score_table(b)
        same_rows += ta.keys() == tb.keys()
        shared = ta.keys() & tb.keys()
        moved = []
        for column in SCORE_COLUMNS:
            diffs = [abs(ta[k][column] - tb[k][column]) for k in shared if column in ta[k] and column in tb[k]
                     and np.isfinite(ta[k][column]) and np.isfinite(tb[k][column])]
            if diffs:
                moved.append(f"{column} max |diff| {max(diffs):.3f}, mean {np.mean(diffs):.3f}")
        details.append(f"{key}: rows {len(ta)} vs {len(tb)}, {len(shared)} shared" +
                       (f"; {'; '.join(moved)}" if moved else ""))
    return f"tables with the same rows {same_rows}/{tables} (figures not compared)", details


COMPARE = {"bytes": compare_bytes, "model": compare_models, "labels": compare_labels, "scores": compare_scores}


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop the DAG at pseudolabel_status (about half)")
    parser.add_argument("--seed", type=int, default=17, help="random kill timing")
    parser.add_argument("--kills", default=",".join(KILL_RULES), help="comma-separated kill points, DAG order")
    parser.add_argument("--targets", nargs="*", default=[], help="snakemake targets (default: all)")
    parser.add_argument("--until", nargs="*", default=[], help="snakemake --until rules or files")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=5400, help="seconds per snakemake run")
    parser.add_argument("--scratch", default=None, help="folder for the scratch directory (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--live", action="store_true",
                        help="run the checkout's Snakefile itself, not a snapshot of it taken at the start")
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "RESUMED"),
                        help="only compare the results/ of two kept working directories")
    args = parser.parse_args(argv)
    if args.quick and not args.until:
        args.until = ["pseudolabel_status"]
    return args


def _user_env() -> dict:
    """The environment as a user's shell has it, without this venv on PATH (as tests/workflow_runner.snakemake)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {**os.environ, "PATH": path or "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    return env


def _due(points: list[KillPoint], jobs: JobStream, workdir: Path, now: float) -> KillPoint | None:
    for job in jobs.running():
        for point in points:
            if point.fired is None and (seen := point.check(job, workdir, now)):
                point.fired, point.job = seen, job
                return point
    return None


def _kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL snakemake's process group; then any descendant that left the group. Returns how many survived."""
    import psutil  # a Snakemake dependency

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for p in alive:
        p.kill()
    return len(alive)


def _files(root: Path) -> dict[str, Path]:
    """Files under root by their normalized path relative to root's parent (results/...); duplicates numbered."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        key = str(path.relative_to(root.parent))
        for pattern, replacement in NAME_NORMALIZATION:
            key = pattern.sub(replacement, key)
        base, n = key, 1
        while key in out:
            n += 1
            key = f"{base} #{n}"
        out[key] = path
    return out


def _stage_of(key: str) -> tuple[str, str, str]:
    return next(s for s in STAGES if key.startswith(s[0]))


def _stages_present(ref: dict, new: dict) -> list[tuple[str, str, str]]:
    present = {_stage_of(k)[0] for k in list(ref) + list(new)}
    return [s for s in STAGES if s[0] in present]


def _difference(a: Path, b: Path) -> str:
    if a.name.endswith(".b2nd"):
        va, vb = _b2nd_array(a), _b2nd_array(b)
        if va.shape != vb.shape:
            return f"arrays of shapes {va.shape} vs {vb.shape}"
        return f"array values differ {(va != vb).mean():.3%}, max |diff| {np.abs(va.astype(float) - vb).max():.4g}"
    if a.name.endswith(".gz"):
        da, db = gzip.decompress(a.read_bytes()), gzip.decompress(b.read_bytes())
        if da == db:
            return "same content, gzip header differs"
        if a.name.endswith(".nii.gz"):
            import nibabel as nib

            ia, ib = nib.load(a), nib.load(b)
            if ia.shape != ib.shape:
                return f"shapes {ia.shape} vs {ib.shape}"
            va, vb = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
            return (f"voxels differ {(va != vb).mean():.3%}, max |diff| {np.abs(va.astype(float) - vb).max():.4g}, "
                    f"header {'same' if ia.header.binaryblock == ib.header.binaryblock else 'differs'}")
        return "content differs"
    la, lb = a.read_bytes().splitlines(), b.read_bytes().splitlines()
    first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    return f"{len(la)} vs {len(lb)} lines, first difference at line {first + 1}"


def _statuses(report: Path) -> list[tuple[str, ...]]:
    """(group, volume_id, status) rows of a shard report or the status table; reasons differ by design ("kept")."""
    with open(report, newline="") as handle:
        return [(r.get("group", ""), r["volume_id"], r["status"]) for r in csv.DictReader(handle, delimiter="\t")]


def _score_table(path: Path) -> dict[tuple, dict[str, float]]:
    """A TSV's rows keyed by their identifying text cells (not the outcome columns of OUTCOME_COLUMNS), values
    the cells that are numbers, by column."""
    with open(path, newline="") as handle:
        rows: dict[tuple, dict[str, float]] = {}
        for row in csv.DictReader(handle, delimiter="\t"):
            key, values = [], {}
            for column, cell in row.items():
                try:
                    values[column] = float(cell)
                except (TypeError, ValueError):
                    if column not in OUTCOME_COLUMNS:
                        key.append(cell)
            rows[tuple(key)] = values
    return rows


def _same_content(a: Path, b: Path) -> str | None:
    """Why two files whose bytes differ hold the same content, or None."""
    for suffix, why, read in SAME_CONTENT:
        if a.name.endswith(suffix):
            try:
                return why if _equal(read(a), read(b)) else None
            except Exception:  # unreadable: let _difference say what differs
                return None
    return None


def _equal(x, y) -> bool:
    return bool(np.array_equal(x, y)) if isinstance(x, np.ndarray) else x == y


def _b2nd_array(path: Path) -> np.ndarray:
    import blosc2  # nnU-Net's preprocessed format

    return blosc2.open(str(path), mode="r")[:]


def _json_without_timing(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in TIMING_KEYS}


def _training_started(workdir: Path, job: Job, since: float) -> bool:
    """The job's log or nnU-Net's training log of its group, written since the job started, says epoch 0 began."""
    if TRAINING_STARTED in _read(workdir / job.log):
        return True
    group = job.fields.get("wildcards", "").removeprefix("group=")
    return any(p.stat().st_mtime >= since and TRAINING_STARTED in _read(p)
               for p in workdir.glob(NNUNET_TRAINING_LOGS.format(group=group)))


def _volume_folders(batch_dir: Path) -> int:
    return sum(1 for p in batch_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if batch_dir.is_dir() else 0


def _read(path: Path, offset: int = 0) -> str:
    try:
        with open(path, errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
