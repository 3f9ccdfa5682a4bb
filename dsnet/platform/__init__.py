"""Library side of the Kubeflow pipeline (``components/``, ``pipeline/``, ``dsnet pipeline``).

The KFP components stay thin: each calls a `dsnet` step function, plus, for the steps that
only exist in the pipeline, one function here:

- `dsnet.platform.run_params`: the run's parameters from the image's ``params.yaml``, a
  profile and the pipeline's typed knobs;
- `dsnet.platform.datasource`: a data dir from a DVC data repository at a revision;
- `dsnet.platform.retraining`: whether the data changed since the champion was trained;
- `dsnet.platform.metrics_views`: Markdown and KFP confusion-matrix views of ``metrics.json``;
- `dsnet.platform.services`: point MLflow, S3 and DVC clients at the cluster services;
- `dsnet.platform.pytorchjob.run`: run ``dsnet train`` as a PyTorchJob and wait for it.

And the commands ``dsnet pipeline run | schedule | local`` use:

- `dsnet.platform.arguments`: pipeline arguments checked against the compiled YAML;
- `dsnet.platform.submit`: submit a run or a recurring run to a KFP API server;
- `dsnet.platform.local`: run the compiled pipeline on this machine with ``kfp.local``.

`dsnet` never imports ``components/`` or ``pipeline/``: it works from the compiled
pipeline YAML only.

May import: dsnet.core, dsnet.data, dsnet.tracking, dsnet.ingest, dsnet.lifecycle
"""
