"""workflow_scripts/run_tests.sh: where SLURM can be installed (root, apt-get) a cluster that does not come up fails
the run before pytest starts, instead of leaving every cluster test skipped and CI green.

The real script runs in a scratch copy of the repository layout whose collaborators are stand-ins: setup_env.sh does
nothing, tests/cluster/slurm-up.sh exits with a chosen status, .venv/bin/python records that pytest was started and
with which arguments, and `id` / `apt-get` on PATH say whether this is a root machine with apt-get.
"""

import shutil
import subprocess

from helpers import REPO

STUB_PYTHON = '#!/usr/bin/env bash\necho "$@" > "$(dirname "$0")/../../pytest_started"\n'


def _tree(tmp_path, slurm_up_status: int, root: bool):
    tree = tmp_path / "repo"
    (tree / "workflow_scripts").mkdir(parents=True)
    shutil.copy(REPO / "workflow_scripts" / "run_tests.sh", tree / "workflow_scripts" / "run_tests.sh")
    (tree / "workflow_scripts" / "setup_env.sh").write_text("exit 0\n")
    (tree / "tests" / "cluster").mkdir(parents=True)
    (tree / "tests" / "cluster" / "slurm-up.sh").write_text(
        f'echo "accounting=$SLURM_CI_ACCOUNTING" > slurm_up_called\necho "slurm-up: munged failed" >&2\n'
        f"exit {slurm_up_status}\n")
    (tree / ".venv" / "bin").mkdir(parents=True)
    _executable(tree / ".venv" / "bin" / "python", STUB_PYTHON)
    fake = tmp_path / "bin"
    fake.mkdir()
    _executable(fake / "id", f"#!/usr/bin/env bash\necho {0 if root else 1000}\n")
    if root:
        _executable(fake / "apt-get", "#!/usr/bin/env bash\nexit 0\n")
    return tree, fake


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)


def _run(tree, fake, *args, **env):
    full_env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tree), **env}  # the fake `id` comes first
    return subprocess.run(["bash", str(tree / "workflow_scripts" / "run_tests.sh"), *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_as_root_with_apt_get_a_slurm_that_does_not_come_up_fails_the_run_before_pytest(tmp_path):
    tree, fake = _tree(tmp_path, slurm_up_status=3, root=True)
    result = _run(tree, fake, "-m", "not slow")
    assert result.returncode == 1
    assert (tree / "slurm_up_called").read_text() == "accounting=dbd\n"
    assert not (tree / "pytest_started").exists()
    assert "local SLURM did not come up" in result.stderr and "slurm-up: munged failed" in result.stderr


def test_as_root_with_apt_get_and_slurm_up_pytest_runs_with_the_arguments(tmp_path):
    tree, fake = _tree(tmp_path, slurm_up_status=0, root=True)
    result = _run(tree, fake, "-m", "cluster")
    assert result.returncode == 0, result.stderr
    assert (tree / "slurm_up_called").exists()
    assert (tree / "pytest_started").read_text() == "-m pytest -m cluster\n"


def test_without_root_slurm_is_not_started_and_pytest_runs(tmp_path):
    tree, fake = _tree(tmp_path, slurm_up_status=3, root=False)
    result = _run(tree, fake)
    assert result.returncode == 0, result.stderr
    assert not (tree / "slurm_up_called").exists()
    assert (tree / "pytest_started").read_text() == "-m pytest\n"


def test_cads_skip_slurm_skips_the_cluster_on_purpose_and_says_so(tmp_path):
    tree, fake = _tree(tmp_path, slurm_up_status=3, root=True)
    result = _run(tree, fake, CADS_SKIP_SLURM="1")
    assert result.returncode == 0, result.stderr
    assert not (tree / "slurm_up_called").exists()
    assert "CADS_SKIP_SLURM=1" in result.stderr and (tree / "pytest_started").exists()
