"""The final model's trainers: nnU-Net sampling images by the oversampling table and patches by minority classes.

Online Methods 4.1: "nnU-Net by default applies uniform image sampling and prioritizes foreground classes during
patch sampling, [but] does not distinguish between minority and majority foreground classes. Therefore, we perform
oversampling that assigns sampling weights based on the inverse probability of class occurrence." The weights and
probabilities come from cadsflow.final.oversampling (the authors' count_structure_frequency.py); this file only
uses them, through two hooks that nnU-Net 2.x's nnUNetDataLoader already has:
- image sampling: the loader draws each batch's cases with np.random.choice(identifiers, p=sampling_probabilities)
  (batchgenerators DataLoader.get_indices, infinite mode); stock nnU-Net passes None (uniform), here the table's
  probabilities, aligned with the dataset's identifiers and renormalised over them;
- patch class: for a patch that must contain foreground, get_bbox picks a class uniformly among those with
  class_locations in the case, unless `overwrite_class` names one that the case contains. OversamplingDataLoader
  passes, as overwrite_class, a minority class drawn uniformly among the minority classes the case contains, so
  such patches are centred on a minority structure whenever the case has one, and nnU-Net's own choice applies
  otherwise. The authors' trainer is not public; its name, nnUNetTrainerNoMirroringOversampleImageOverwriteClass
  (murong-xu/CADS cads/train/), points at the same two hooks (sampling probabilities and overwrite_class).
Background patches (force_fg False) and the validation loader are nnU-Net's own.

How the table reaches the trainer: like the schedule (cads_trainers.py), through the training process's
environment: CADS_OVERSAMPLING_TABLE is the path of the group's table (python -m cadsflow.final weights). It is read
when the data loaders are built (on_train_start), not at construction, so the predictor, which only loads the
network, never needs it. nnU-Net finds these classes through nnUNet_extTrainer, which lists this folder; the folder
is on sys.path while nnU-Net imports from it, so `cads_trainers` is imported as a sibling module.

Mirroring is off (Online Methods 6.1), inherited from nnUNetTrainerCadsNoMirroring, as is the schedule from
CADS_NNUNET_EPOCHS / _ITERATIONS_PER_EPOCH / _VAL_ITERATIONS_PER_EPOCH.
"""

import os

import numpy as np
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from cads_trainers import nnUNetTrainerCadsNoMirroring, nnUNetTrainerCadsSmoke
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from cadsflow.final.oversampling import OVERSAMPLING_TABLE_ENV, OversamplingTable, read_table


class OversamplingDataLoader(nnUNetDataLoader):
    """nnU-Net's loader, drawing cases by `sampling_probabilities` and centring foreground patches on minority classes.

    `minority_classes` are label values of the dataset (the group's label ids). Randomness is numpy's global
    generator, as everywhere in nnU-Net's loaders, so one np.random.seed fixes a run.
    """

    def __init__(self, data, batch_size, patch_size, final_patch_size, label_manager, sampling_probabilities,
                 minority_classes, **kwargs):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         sampling_probabilities=sampling_probabilities, **kwargs)
        self.minority_classes = tuple(int(c) for c in minority_classes)

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        if force_fg and overwrite_class is None and class_locations is not None:
            overwrite_class = self.minority_class_for(class_locations)
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)

    def minority_class_for(self, class_locations: dict):
        """A minority class with voxels in this case, drawn uniformly; None when the case has none."""
        present = [c for c in self.minority_classes if len(class_locations.get(c, ())) > 0]
        if not present:
            return None
        return present[np.random.choice(len(present))]


class nnUNetTrainerCadsOversampling(nnUNetTrainerCadsNoMirroring):
    """The CADS model's trainer (Online Methods 4.1): class-balanced image and patch sampling, mirroring off."""

    def get_dataloaders(self):
        """nnUNetTrainer.get_dataloaders (nnunetv2 2.8), with OversamplingDataLoader as the training loader."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        deep_supervision_scales = self._get_deep_supervision_scales()
        rotation_for_da, do_dummy_2d_data_aug, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        regions = self.label_manager.foreground_regions if self.label_manager.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation_for_da, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels, regions=regions,
            ignore_label=self.label_manager.ignore_label)
        val_transforms = self.get_validation_transforms(
            deep_supervision_scales, is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels, regions=regions,
            ignore_label=self.label_manager.ignore_label)

        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        table, table_path = self.oversampling_table()
        dl_tr = OversamplingDataLoader(
            dataset_tr, self.batch_size, initial_patch_size, patch_size, self.label_manager,
            sampling_probabilities=table.probabilities_for(dataset_tr.identifiers, where=table_path),
            minority_classes=table.minority_label_ids,
            oversample_foreground_percent=self.oversample_foreground_percent, pad_sides=None,
            transforms=tr_transforms, probabilistic_oversampling=self.probabilistic_oversampling)
        dl_val = nnUNetDataLoader(
            dataset_val, self.batch_size, patch_size, patch_size, self.label_manager,
            oversample_foreground_percent=self.oversample_foreground_percent, sampling_probabilities=None,
            pad_sides=None, transforms=val_transforms, probabilistic_oversampling=self.probabilistic_oversampling)
        self._log_sampling(dl_tr, table_path)

        processes = get_allowed_n_proc_DA()
        if processes == 0:
            mt_gen_train = SingleThreadedAugmenter(dl_tr, None)
            mt_gen_val = SingleThreadedAugmenter(dl_val, None)
        else:
            pin_memory = self.device.type == "cuda"
            mt_gen_train = NonDetMultiThreadedAugmenter(
                data_loader=dl_tr, transform=None, num_processes=processes, num_cached=max(6, processes // 2),
                seeds=None, pin_memory=pin_memory, wait_time=0.002)
            mt_gen_val = NonDetMultiThreadedAugmenter(
                data_loader=dl_val, transform=None, num_processes=max(1, processes // 2),
                num_cached=max(3, processes // 4), seeds=None, pin_memory=pin_memory, wait_time=0.002)
        _ = next(mt_gen_train)
        _ = next(mt_gen_val)
        return mt_gen_train, mt_gen_val

    def oversampling_table(self) -> tuple[OversamplingTable, str]:
        """The table CADS_OVERSAMPLING_TABLE names, checked against this dataset's labels; and its path."""
        path = os.environ.get(OVERSAMPLING_TABLE_ENV)
        if not path:
            raise RuntimeError(f"{type(self).__name__} samples by an oversampling table: set {OVERSAMPLING_TABLE_ENV} "
                               "to the group's table (python -m cadsflow.final weights)")
        table = read_table(path)
        unknown = sorted(set(table.minority_label_ids) - set(self.label_manager.foreground_labels))
        if unknown:
            raise RuntimeError(f"{path}: minority classes {unknown} are not foreground labels of this dataset "
                               f"({self.label_manager.foreground_labels}); was the table written for another group?")
        return table, path

    def _log_sampling(self, loader: OversamplingDataLoader, table_path: str) -> None:
        p = np.asarray(loader.sampling_probabilities)
        self.print_to_log_file(f"oversampling table {table_path}: {len(p)} training cases, probabilities "
                               f"{p.min():.3g}-{p.max():.3g}, minority classes {list(loader.minority_classes)}")


class nnUNetTrainerCadsOversamplingSmoke(nnUNetTrainerCadsOversampling, nnUNetTrainerCadsSmoke):
    """The demo's final model: the oversampling trainer with the smoke schedule and no final validation.

    Method resolution: get_dataloaders from nnUNetTrainerCadsOversampling, the schedule (__init__) and the skipped
    final validation from nnUNetTrainerCadsSmoke.
    """
