"""Component ``train_distributed``: DSNet training as a multi-node PyTorchJob."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import dsnet_component


@dsnet_component
def train_distributed(
    data: Input[Dataset],
    patient_split: Input[Artifact],
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    run_id: str,
    image: str,
    data_pvc: str,
    workers: int,
    gpus_per_worker: int,
    s3_secret: str,
    gpu_node_label: str,
    model: Output[Model],
    shared_dir: str = "/data",
    timeout_s: int = 86400,
):
    """Run dsnet train under torchrun in a Kubeflow PyTorchJob and wait for it.

    Args:
        data: The data dir.
        patient_split: split.json.
        params: The run's parameters.
        mlflow_tracking_uri: MLflow tracking server of the replicas.
        s3_endpoint_url: S3 endpoint of the replicas (MinIO).
        run_id: The pipeline run id (names the job, so a retried step finds it).
        image: The dsnet image of the replicas.
        data_pvc: ReadWriteMany claim mounted at shared_dir here and in the replicas.
        workers: Worker replicas besides the master.
        gpus_per_worker: GPUs (torchrun processes) per replica.
        s3_secret: Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the replicas.
        gpu_node_label: Node label key=value of the GPU pool.
        model: Folder with model.pt, last.ckpt, train_run.json and plots/train_loss.csv.
        shared_dir: Mount path of data_pvc.
        timeout_s: Give up (and delete the job) after this many seconds.
    """
    import os

    from kubernetes import client, config

    from dsnet.platform.pytorchjob.run import train_distributed as run_job
    from dsnet.platform.services import service_env

    config.load_incluster_config()
    key, _, value = gpu_node_label.partition("=")
    job = run_job(
        data.path,
        patient_split.path,
        params.path,
        model.path,
        api=client.CustomObjectsApi(),
        run_id=run_id,
        image=image,
        namespace=os.environ["POD_NAMESPACE"],
        shared_dir=shared_dir,
        data_pvc=data_pvc,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        env=service_env(mlflow_tracking_uri, s3_endpoint_url),
        env_from_secrets=[s3_secret],
        node_selector={key: value},
        timeout_s=timeout_s,
    )
    model.metadata.update({"framework": "pytorch", **job})
