"""Evaluation: the ``dsnet evaluate`` step, the paper's metrics, plots and the ablation.

`evaluate` (the step), `coco` (pycocotools' COCOeval), `detection` (matching-based
recall, accuracy, confusion matrix, patient-level accuracy), `plots` (draw and export
them), `ablate` (the paper's Tables 1-2), `review/` (the review report `evaluate` writes:
intervals, champion comparison, error gallery, per-patient table). Definitions in
docs/metrics.md.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.tracking, dsnet.inference,
dsnet.training
"""
