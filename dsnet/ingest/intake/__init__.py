"""Data intake that versions itself: inbox batches -> curated data dir -> DVC + git versions.

`intake(inbox, data_repo, data_dir, ...)` (`dsnet.ingest.intake.run`) is the step; the modules
below it each do one part: `inbox` (local folder or S3 prefix), `merge` (into the curated
data dir without duplicates), `versioning` (DVC add/push, git commit/tag), `data_report`
(the data report of a version). docs/intake.md describes the whole flow.
"""

from dsnet.ingest.intake.run import BatchResult, IntakeResult, intake

__all__ = ["BatchResult", "IntakeResult", "intake"]
