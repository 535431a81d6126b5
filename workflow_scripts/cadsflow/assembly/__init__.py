"""Assembly of the final labels (Online Methods 2.5, 5.2), rib refinement (3.2) and the dataset card (Tables A.4-A.5).

merge.py: the progressive merge of the flavors' predictions with ground-truth override (pure numpy);
blocks.py: vertebra and rib blocks as data (config/assembly.yaml); ribs.py: rib refinement;
provenance.py: where each structure's voxels came from; volume.py: one volume/batch from and to files;
card.py: the dataset card tables; __main__.py: command lines for the rules.
"""
