"""The trainer lookup of a training job (cadsflow.specialists.nnunet.find_trainer_class): the Cads trainer class found in
nnUNet_extTrainer without importing nnU-Net's whole trainer package (timm included), and the same class as nnU-Net's own
search would return.
"""

import inspect
import os
import sys
import textwrap

import pytest


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
