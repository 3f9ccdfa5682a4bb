"""Detection metrics of the paper: COCO mAP@0.5 (pycocotools), recall, accuracy, plots.

`coco` wraps pycocotools' COCOeval; `detection` holds the matching-based metrics
(recall, accuracy, confusion matrix, patient-level accuracy); `plots` draws and exports
them. Definitions are documented in docs/metrics.md.
"""
