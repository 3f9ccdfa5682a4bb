"""Component ``train``: DSNet training in one pod (GPUs or CPU, as the placement step says)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import dsnet_component


@dsnet_component
def train(
    data: Input[Dataset],
    patient_split: Input[Artifact],
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    kfp_run_id: str,
    pipeline_version: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train the detector on the split's training patients (dsnet train).

    Args:
        data: The data dir.
        patient_split: split.json.
        params: The run's parameters (sections preprocess, model, train).
        mlflow_tracking_uri: MLflow tracking server (the training run and its lineage).
        s3_endpoint_url: S3 endpoint of MLflow's artifact store.
        kfp_run_id: The KFP run id (tag kfp.run_id of the MLflow runs this step starts).
        pipeline_version: The compiled pipeline's version (tag kfp.pipeline_version).
        model: Folder with model.pt, train_run.json and plots/train_loss.csv (the resume
            state last.ckpt stays in the pod's scratch space).
        metrics: Final loss, throughput, epochs.
    """
    import os
    import tempfile

    from dsnet.core.config import load_params
    from dsnet.platform.model_artifact import publish_model
    from dsnet.platform.services import use_services
    from dsnet.training.train import train as train_detector

    use_services(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version)
    resolved = load_params([params.path])
    with tempfile.TemporaryDirectory(prefix="dsnet-train-") as scratch:
        result = train_detector(
            data.path,
            patient_split.path,
            scratch,
            resolved,
            plots_dir=os.path.join(model.path, "plots"),
        )
        publish_model(scratch, model.path)
    metrics.log_metric("final_loss", result.final_loss)
    metrics.log_metric("images_per_s", result.images_per_s)
    metrics.log_metric("epochs", result.epochs)
    metrics.log_metric("train_seconds", result.train_seconds)
    model.metadata.update(
        {
            "framework": "pytorch",
            "backbone": resolved["model"]["backbone"],
            "attention": resolved["model"]["attention"],
            "run_id": result.run_id or "",
            "device": result.device,
            "world_size": result.world_size,
        }
    )
