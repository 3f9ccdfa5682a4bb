"""The synthetic lumbar-CT simulator: a data dir that needs no real patients.

`population` (patients, DXA T-scores), `anatomy` and `shapes` (vertebral geometry),
`bone` (HU of cortical and trabecular bone), `phantom` (one axial slice), `dicomct`
(write it as a CT DICOM file), `generate` (the ``dsnet synth`` step), `preview` (a
contact sheet of any data dir). docs/synthetic-data.md.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models
"""
