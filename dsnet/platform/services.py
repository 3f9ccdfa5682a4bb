"""Point the clients of a pipeline step at the cluster's MLflow server and S3 endpoint.

KFP passes service addresses as run parameters (defaults: the stack's Services in the
steps' own namespace), while the
credentials arrive as environment variables from Kubernetes Secrets. A component calls
:func:`use_services` first, so `dsnet.tracking.runs`, boto3 and DVC see one consistent setup.
"""

from __future__ import annotations

import os


def service_env(
    mlflow_tracking_uri: str = "",
    s3_endpoint_url: str = "",
    kfp_run_id: str = "",
    pipeline_version: str = "",
) -> dict[str, str]:
    """The environment variables that MLflow, boto3, DVC and dsnet read; empty values are left out.

    Args:
        mlflow_tracking_uri: MLflow tracking server, e.g. ``http://mlflow:5000``
            (``MLFLOW_TRACKING_URI``).
        s3_endpoint_url: S3-compatible endpoint, e.g. ``http://dsnet-s3:8333``
            (``MLFLOW_S3_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL``).
        kfp_run_id: The KFP run (``DSNET_KFP_RUN_ID``): every MLflow run the step starts is
            tagged with it (`dsnet.tracking.pipeline_tags`).
        pipeline_version: The compiled pipeline's version (``DSNET_PIPELINE_VERSION``), tagged
            likewise.

    Returns:
        Variable name -> value.

    """
    env: dict[str, str] = {}
    if kfp_run_id:
        env["DSNET_KFP_RUN_ID"] = kfp_run_id
    if pipeline_version:
        env["DSNET_PIPELINE_VERSION"] = pipeline_version
    if mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    if s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint_url
        env["AWS_ENDPOINT_URL"] = s3_endpoint_url
    return env


def use_services(
    mlflow_tracking_uri: str = "",
    s3_endpoint_url: str = "",
    kfp_run_id: str = "",
    pipeline_version: str = "",
) -> dict[str, str]:
    """Set :func:`service_env` in this process's environment and return what was set."""
    env = service_env(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version)
    os.environ.update(env)
    return env
