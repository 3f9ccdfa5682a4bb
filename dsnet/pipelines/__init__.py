"""Library side of the Kubeflow pipeline (``components/``, ``pipeline/``, ``dsnet pipeline``).

The KFP components stay thin: each calls a `dsnet` step function, plus, for the steps that
only exist in the pipeline, one function here:

- `dsnet.pipelines.run_params`: the run's parameters from the image's ``params.yaml``, a
  profile and the pipeline's typed knobs;
- `dsnet.pipelines.datasource`: a data dir from a DVC data repository at a revision;
- `dsnet.pipelines.retraining`: whether the data changed since the champion was trained;
- `dsnet.pipelines.reports`: Markdown and KFP confusion-matrix views of ``metrics.json``;
- `dsnet.pipelines.services`: point MLflow, S3 and DVC clients at the cluster services;
- `dsnet.pipelines.placement`: a run's GPU count as pod resources, tolerations, selector;
- `dsnet.pipelines.model_artifact`: what of training's output the ``Model`` artifact holds;
- `dsnet.pipelines.trainjob`: run ``dsnet train`` as a Kubeflow Trainer TrainJob and wait.

And the commands ``dsnet pipeline run | schedule | local`` use:

- `dsnet.pipelines.arguments`: pipeline arguments checked against the compiled YAML;
- `dsnet.pipelines.submit`: submit a run or a recurring run to a KFP API server;
- `dsnet.pipelines.local`: run the compiled pipeline on this machine with ``kfp.local``.

`dsnet` never imports ``components/`` or ``pipeline/``: it works from the compiled
pipeline YAML only.
"""
