"""The two import cuts of a training job (cadsflow.specialists.nnunet): the trainer class found in nnUNet_extTrainer
without importing nnU-Net's whole trainer package, and plotting modules that load on first use.

Both must leave nnU-Net's behaviour as it is: the same trainer class as nnU-Net's own search, and a progress plot
that nnU-Net's logger still draws after the deferral. Each deferral check runs in a fresh interpreter, because
sys.modules is the process's.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

from cadsflow.specialists.nnunet import TRAINERS_DIR, find_trainer_class

CADS_TRAINERS = ("nnUNetTrainerCadsNoMirroring", "nnUNetTrainerCadsSmoke", "nnUNetTrainerCadsFlavor",
                 "nnUNetTrainerCadsFlavorSmoke", "nnUNetTrainerCadsOversampling", "nnUNetTrainerCadsOversamplingSmoke")


@pytest.mark.parametrize("name", CADS_TRAINERS)
def test_a_project_trainer_is_the_class_its_module_in_the_trainers_folder_defines(name):
    found = find_trainer_class(name, str(TRAINERS_DIR))
    assert found.__name__ == name
    source = inspect.getsourcefile(found)
    assert os.path.dirname(source) == str(TRAINERS_DIR)
    assert f"class {name}(" in open(source).read()


def test_a_trainer_outside_the_folder_comes_from_nnunets_own_search(tmp_path):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert find_trainer_class("nnUNetTrainer", str(tmp_path)) is nnUNetTrainer


def test_a_module_of_the_folder_is_imported_with_its_siblings_importable(tmp_path):
    (tmp_path / "base_trainers.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerT9Base(nnUNetTrainer):
            EPOCHS = 3
    """))
    (tmp_path / "zz_trainers.py").write_text(textwrap.dedent("""
        from base_trainers import nnUNetTrainerT9Base
        class nnUNetTrainerT9Child(nnUNetTrainerT9Base):
            EPOCHS = 7
    """))
    found = find_trainer_class("nnUNetTrainerT9Child", str(tmp_path))
    assert found.EPOCHS == 7 and found.__mro__[1].__name__ == "nnUNetTrainerT9Base"
    assert str(tmp_path) not in sys.path


def test_a_class_of_that_name_that_is_no_trainer_is_refused_naming_the_file(tmp_path):
    (tmp_path / "odd_trainers.py").write_text("class nnUNetTrainerT9Odd(object):\n    pass\n")
    with pytest.raises(TypeError, match="odd_trainers.py: nnUNetTrainerT9Odd is not an nnUNetTrainer subclass"):
        find_trainer_class("nnUNetTrainerT9Odd", str(tmp_path))


DEFERRED_THEN_PLOTTED = """
import json, sys
from cadsflow.specialists.nnunet import PLOTTING_MODULES, defer_plotting_imports
defer_plotting_imports()
from nnunetv2.training.logging.nnunet_logger import LocalLogger
import inspect
inspect.getmodule(sys._getframe())  # walks sys.modules reading __file__, as torch's op registration does at import
after_import = {name: type(sys.modules[name]).__name__ for name in PLOTTING_MODULES}
logger = LocalLogger()
for key, value in [("mean_fg_dice", 0.5), ("ema_fg_dice", 0.5), ("dice_per_class_or_region", [0.5]),
                   ("train_losses", 1.0), ("val_losses", 1.1), ("lrs", 0.01), ("epoch_start_timestamps", 0.0),
                   ("epoch_end_timestamps", 2.0)]:
    logger.log(key, value, 0)
logger.plot_progress_png(sys.argv[1])
after_plot = {name: type(sys.modules[name]).__name__ for name in PLOTTING_MODULES}
import matplotlib
print(json.dumps({"after_import": after_import, "after_plot": after_plot, "backend": matplotlib.get_backend()}))
"""


@pytest.mark.slow
def test_nnunets_logger_imports_without_plotting_modules_and_still_draws_its_progress_plot(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts"), MPLBACKEND="")
    result = subprocess.run([sys.executable, "-c", DEFERRED_THEN_PLOTTED, str(tmp_path)], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == {"seaborn": "_DeferredModule", "matplotlib.pyplot": "_DeferredModule"}
    assert report["after_plot"] == {"seaborn": "module", "matplotlib.pyplot": "module"}
    assert report["backend"] == "agg"
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
