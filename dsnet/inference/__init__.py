"""Running a trained detector: load it, feed it slices, report what it found.

`load` (checkpoint path or MLflow model URI -> detector), `detect` (one slice), `predict`
(the ``dsnet predict`` step), `results` (its records), `overlays` (PNG overlays and
``report.md``), `pyfunc` (the same model as an MLflow pyfunc). docs/prediction.md.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.tracking
"""
