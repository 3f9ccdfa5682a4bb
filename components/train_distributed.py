"""Component ``train_distributed``: DSNet training as a Kubeflow Trainer v2 TrainJob."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import dsnet_component


@dsnet_component
def train_distributed(
    data: Input[Dataset],
    patient_split: Input[Artifact],
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    kfp_run_id: str,
    pipeline_version: str,
    image: str,
    image_pull_secrets: list,
    nodes: int,
    gpus_per_node: int,
    gpu_type: str,
    gpu_node_selector: dict,
    model: Output[Model],
    shared_dir: str = "/data",
    timeout_s: int = 86400,
):
    """Run dsnet train under torchrun in a TrainJob (runtime dsnet-torch-distributed), wait.

    Args:
        data: The data dir.
        patient_split: split.json.
        params: The run's parameters.
        mlflow_tracking_uri: MLflow tracking server of the nodes.
        s3_endpoint_url: S3 endpoint of the nodes.
        kfp_run_id: The KFP run id (names the job, so a retried step finds it; MLflow tag).
        pipeline_version: The compiled pipeline's version (MLflow tag).
        image: The dsnet image of the nodes.
        image_pull_secrets: Secrets of the image's registry (may be empty).
        nodes: Training nodes (pods).
        gpus_per_node: GPUs (torchrun processes) per node; 0 trains on CPU.
        gpu_type: Extended resource of the GPUs.
        gpu_node_selector: Node labels of the GPU pool (may be empty).
        model: Folder with model.pt, train_run.json and plots/train_loss.csv.
        shared_dir: Mount path of the data claim, here and in the runtime's pods.
        timeout_s: Give up (and delete the job) after this many seconds.
    """
    import os

    from kubernetes import client, config

    from dsnet.platform.services import service_env
    from dsnet.platform.trainjob import train_distributed as run_job

    config.load_incluster_config()
    job = run_job(
        data.path,
        patient_split.path,
        params.path,
        model.path,
        api=client.CustomObjectsApi(),
        run_id=kfp_run_id,
        image=image,
        namespace=os.environ["POD_NAMESPACE"],
        shared_dir=shared_dir,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu_type=gpu_type,
        node_selector=gpu_node_selector,
        env=service_env(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version),
        image_pull_secrets=image_pull_secrets,
        timeout_s=timeout_s,
    )
    model.metadata.update({"framework": "pytorch", **job})
