"""The training-data contract: WHO classes, the data dir, patient splits, the dataset.

`classes` (the three grades), `contract` (load and validate a data dir), `split`
(patients, never slices, into train/test), `dataset` (torch dataset and loader),
`augment` (training augmentations). torch only in `dataset`/`augment`.

May import: dsnet.core, dsnet.io
"""
