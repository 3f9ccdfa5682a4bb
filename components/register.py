"""Component ``register``: a new MLflow model version (challenger) when the gate passes."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components import dsnet_component


@dsnet_component
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    data: Input[Dataset],
    patient_split: Input[Artifact],
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    kfp_run_id: str,
    pipeline_version: str,
    receipt: Output[Artifact],
    summary: Output[Markdown],
) -> NamedTuple("Outputs", [("gate", str), ("version", int), ("model_uri", str)]):
    """Gate (including the champion comparison) and register the model (dsnet register).

    Args:
        model: Folder with model.pt and train_run.json.
        evaluation: Folder with metrics.json.
        data: The data dir of the hold-out (lineage: data_version).
        patient_split: split.json (the hold-out).
        params: The run's parameters (section register).
        mlflow_tracking_uri: MLflow tracking server with the model registry.
        s3_endpoint_url: S3 endpoint of MLflow's artifact store.
        kfp_run_id: The KFP run id (tag kfp.run_id of the MLflow runs this step starts).
        pipeline_version: The compiled pipeline's version (tag kfp.pipeline_version).
        receipt: register.json: every criterion, the version and its aliases.
        summary: The gate as a Markdown table and the registered version.

    Returns:
        gate: passed or failed.
        version: The registered version (0 when nothing was registered).
        model_uri: models:/<name>/<version>, or empty.
    """
    import os
    from collections import namedtuple

    from dsnet.core.config import load_params
    from dsnet.core.fsutil import atomic_write_text
    from dsnet.lifecycle.registry.gate import description, read_metrics
    from dsnet.lifecycle.registry.register import register as register_model
    from dsnet.platform.services import use_services

    use_services(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version)
    metrics_path = os.path.join(evaluation.path, "metrics.json")
    result = register_model(
        os.path.join(model.path, "model.pt"),
        metrics_path,
        load_params([params.path]),
        receipt.path,
        data_dir=data.path,
        split_path=patient_split.path,
    )
    version = int(result["version"] or 0)
    model_uri = result.get("model_uri") or ""
    receipt.metadata.update({"gate": result["gate"], "version": version, "model_uri": model_uri})
    header = f"# Registration: gate {result['gate']}\n\n{result['reason']}\n\n"
    if version:
        header += f"Registered `{model_uri}` (aliases: {', '.join(result['aliases'])}).\n\n"
    atomic_write_text(
        summary.path, header + description(read_metrics(metrics_path), result["criteria"])
    )
    print(result["reason"])
    return namedtuple("Outputs", ["gate", "version", "model_uri"])(
        result["gate"], version, model_uri
    )
