"""cads-predict: the factory's models applied to a new CT (NIfTI file or DICOM series folder).

models: which trained model each group uses (final models of a run, else its specialists), and the group order.
pipeline: validate, standardize, predict in dependency order with the factory's post-processing, restore, write.
combine: the whole-body map in global ids from the groups' maps (structures over group 559's body regions).
dicomseg: the DICOM-SEG of a DICOM input (highdicom), SNOMED-CT codes from config/structures.tsv.
statistics: volume (ml) and mean / median HU per structure -> statistics.json.
preview: three orthogonal views with the label overlay -> preview.png.
"""
