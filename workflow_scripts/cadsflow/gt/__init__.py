"""Ground-truth preparation (Online Methods 2.1): from each source's own labels to the nine groups' label maps.

- mapping: a source label map -> one group's label map (exact structures only; the rest is nnU-Net's `ignore`)
- sparse: SAROS-style sparse slices made dense by shape-based interpolation
- atlas: brain-tissue labels (group 557) by ANTs SyN registration of an atlas; a deterministic phantom atlas
- anonymize: Gaussian blur of the facial region of new hospital head CTs (Online Methods 1.2)
- provenance: where every structure of a written label map came from (a small TSV per volume)
- volume: one standardized volume -> results/gt/{volume_id}/ (group maps, provenance, record)
- training / nnunet_dataset: which sources train which group, and the nnU-Net v2 raw datasets built from them
"""
