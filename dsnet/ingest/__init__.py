"""Bringing real data in: ingest a source into a data dir, and intake from an inbox.

`records` (accepted slices, what a source yields, the ingest report), `sources` (the
``dsnet ingest`` step and the data-dir source form), `csv_source` (the CSV form), `write`
(de-identified data dir); `intake/` turns inbox batches into versioned data (DVC + git).
docs/data.md, docs/intake.md.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.tracking
"""
