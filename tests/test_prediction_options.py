"""The prediction commands share their options (cadsflow.pseudolabel.options): both parse the same ones and refuse a
tile step outside (0, 1] before loading any model."""

import pytest

from cadsflow.flavors.predict import main as flavor_main
from cadsflow.pseudolabel.__main__ import main as shard_main

COMMON = ["--brain-dir", "a", "b", "--vertebrae-dir", "c", "--threads", "1", "--label-resampling", "nearest"]


@pytest.mark.parametrize("command, args", [
    (shard_main, ["--group", "557", "--model", "m.done", "--volumes", "v", "--out-dir", "o", "--report", "o.tsv"]),
    (flavor_main, ["--group", "557", "--model", "GT=m.done", "--out-root", "o", "--report", "o.tsv"]),
])
@pytest.mark.parametrize("step", ["0", "1.5"])
def test_both_commands_refuse_a_tile_step_outside_0_1(command, args, step):
    with pytest.raises(SystemExit, match=rf"--tile-step-size must be in \(0, 1\], got {step}"):
        command([*args, *COMMON, "--tile-step-size", step])


def test_a_label_export_other_than_the_two_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        shard_main(["--group", "551", "--model", "m", "--volumes", "v", "--out-dir", "o", "--report", "o.tsv",
                    "--label-resampling", "linear"])
    assert "invalid choice: 'linear'" in capsys.readouterr().err
