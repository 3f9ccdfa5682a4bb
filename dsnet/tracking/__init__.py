"""MLflow run tracking and lineage: the runs of the pipeline steps and what they record.

`runs` opens runs (`start_run`), configures MLflow and computes the lineage tags (git
SHA, DVC data version, params hash); `inputs` (data set inputs, tables) and
`system_metrics` (MLflow's system metrics monitor) back the run tracker's methods.

May import: dsnet.core
"""
