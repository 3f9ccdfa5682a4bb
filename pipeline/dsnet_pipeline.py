"""The DSNet-Ops training pipeline (KFP v2): data -> split -> train -> evaluate -> gate -> register.

Reads like the diagram::

    resolve_params
      ├─ data_repo == ""  : synth_data ─┐
      ├─ intake_inbox == "": fetch_data ─┤
      └─ otherwise        : version_data ─► fetch_data(its commit) ─┴─► retraining(data)

    retraining(data, data_version):
      check_data_changed ── retrain (data changed since the champion, or force)?
        split, placement (gpu_count -> resources, tolerations, node selector)
          ├─ distributed == False : train (CPU or GPU pod)     ─┐
          └─ otherwise            : train_distributed (TrainJob) ─┴─► evaluate ─► gate
                                                                  gate passed? ─► register

A run with unchanged data ends after ``check_data_changed``, whose Markdown output says
why. Registration only runs under the gate condition, and
`dsnet.lifecycle.registry.register.register` re-checks the gate against the champion
before it creates a version.

Everything Kubernetes-specific (resources, GPUs, tolerations, node selector, secrets,
volumes, pod labels, retries, caching, pull secrets) is attached in the "platform wiring"
section below and nowhere else. ``kfp.local`` ignores it, so ``dsnet pipeline local`` runs
this same compiled pipeline on one machine (docs/pipeline.md).
"""

import hashlib
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input

from components import BASE_IMAGE, IMAGE_PULL_SECRETS
from components.check_data_changed import check_data_changed
from components.evaluate import evaluate
from components.fetch_data import fetch_data
from components.gate import gate
from components.placement import placement
from components.register import register
from components.resolve_params import resolve_params
from components.split import split
from components.synth_data import synth_data
from components.train import train
from components.train_distributed import train_distributed
from components.version_data import version_data

PIPELINE_NAME = "dsnet-training"


def pipeline_version() -> str:
    """``<dsnet version>+<12 hex of the pipeline's and components' source>``, an MLflow tag."""
    from dsnet import __version__

    sources = [Path(__file__), *sorted((Path(__file__).parents[1] / "components").glob("*.py"))]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    return f"{__version__}+{digest[:12]}"


PIPELINE_VERSION = pipeline_version()

# --------------------------------------------------------------------- platform wiring
# Names from infra/k8s (base kustomization, RBAC, services). The stack is rendered into the
# namespace where the steps run (docs/operations.md), so services are reached by their
# namespace-relative names and every Secret and claim below exists beside the step's pod.
S3_SECRET = "s3-credentials"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (S3 user dsnet)
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET = "mlflow-credentials"  # optional: for an MLflow server behind basic auth
MLFLOW_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
MLFLOW_URI = "http://mlflow:5000"
S3_ENDPOINT = "http://dsnet-s3:8333"
DATA_PVC = "dsnet-data"  # ReadWriteMany in the gpu overlay; shared with the TrainJob
SHARED_DIR = "/data"
TRAIN_TIMEOUT_S = 24 * 3600
# Steps that talk to MLflow, S3 or git: 3 retries after 30 s, 60 s, 120 s (at most 10 min).
RETRY = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0}
RETRY_MAX = "600s"


def needs_s3(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """S3 credentials from the Secret as env, and the label the S3 store's NetworkPolicy admits."""
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_KEYS})
    kubernetes.add_pod_label(task, "dsnet.io/s3-client", "true")
    return task


def needs_mlflow(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Optional MLflow credentials as env, and the label the MLflow NetworkPolicy admits."""
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {k: k for k in MLFLOW_KEYS}, optional=True)
    kubernetes.add_pod_label(task, "dsnet.io/mlflow-client", "true")
    return task


def retried(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Retry with exponential backoff: for steps that talk to MLflow, S3 or git (idempotent)."""
    return task.set_retry(**RETRY, backoff_max_duration=RETRY_MAX)


# step -> (CPU request, CPU limit, memory request, memory limit)
RESOURCES = {
    "small": ("1", "2", "1G", "2G"),
    "data": ("2", "4", "4G", "8G"),
    "register": ("2", "4", "8G", "16G"),
}


# Data intake (optional first step, docs/intake.md): the de-identification key, and optional
# push access to the data repository as git config variables (GIT_CONFIG_COUNT, _KEY_0, ...).
DEID_SECRET = "dsnet-deid-key"  # DSNET_DEID_KEY
DATA_REPO_SECRET = "data-repo-credentials"  # optional
GIT_CONFIG_KEYS = ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0")


def needs_intake(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The de-identification key and data-repository credentials as env, plus S3/MLflow."""
    kubernetes.use_secret_as_env(task, DEID_SECRET, {"DSNET_DEID_KEY": "DSNET_DEID_KEY"})
    kubernetes.use_secret_as_env(
        task, DATA_REPO_SECRET, {k: k for k in GIT_CONFIG_KEYS}, optional=True
    )
    return needs_s3(needs_mlflow(task))


def sized(task: dsl.PipelineTask, size: str) -> dsl.PipelineTask:
    """CPU and memory requests and limits of one of the :data:`RESOURCES` sizes."""
    cpu, cpu_limit, memory, memory_limit = RESOURCES[size]
    task.set_cpu_request(cpu).set_cpu_limit(cpu_limit)
    return task.set_memory_request(memory).set_memory_limit(memory_limit)


def placed(task: dsl.PipelineTask, where: dsl.PipelineTask, gpus: str) -> dsl.PipelineTask:
    """Resources, GPUs, tolerations and node selector from the ``placement`` step, at run time.

    With ``gpu_count = 0`` the accelerator type is ``""`` (the KFP driver then sets no GPU
    resource), the toleration list and the node selector are empty, and CPU and memory are
    modest; otherwise GPUs of `gpu_type`, its taint tolerated, optional selector labels.
    """
    out = where.outputs
    task.set_cpu_request(out["cpu_request"]).set_cpu_limit(out["cpu_limit"])
    task.set_memory_request(out["memory_request"]).set_memory_limit(out["memory_limit"])
    task.set_accelerator_type(out["accelerator"]).set_accelerator_limit(out[gpus])
    kubernetes.add_toleration_json(task, out["tolerations"])
    kubernetes.add_node_selector_json(task, out["node_selector"])
    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit="8Gi")
    kubernetes.set_timeout(task, TRAIN_TIMEOUT_S)
    return task


def on_shared_volume(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The shared data PVC and the pod's namespace (where the TrainJob is created)."""
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=SHARED_DIR)
    kubernetes.use_field_path_as_env(task, "POD_NAMESPACE", "metadata.namespace")
    kubernetes.set_timeout(task, TRAIN_TIMEOUT_S)
    return task


def cached(task: dsl.PipelineTask, enabled: bool) -> dsl.PipelineTask:
    """Set the task's caching deliberately, and the image pull secrets (every task passes here)."""
    if IMAGE_PULL_SECRETS:
        kubernetes.set_image_pull_secrets(task, IMAGE_PULL_SECRETS)
    return task.set_caching_options(enable_caching=enabled)


# ------------------------------------------------------------------------ the pipeline
RUN = {"kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER, "pipeline_version": PIPELINE_VERSION}


def evaluate_and_register(
    model: Any,
    data: Any,
    patient_split: Any,
    params: Any,
    mlflow_tracking_uri: Any,
    s3_endpoint_url: Any,
    where: dsl.PipelineTask,
) -> None:
    """Evaluate a trained model, gate it, and register it only when the gate passed.

    Called inside the current condition of the DAG (its arguments are pipeline channels:
    task outputs and pipeline inputs), once per way of training: ``kfp.local`` 2.17 cannot
    join the two branches' models with ``dsl.OneOf`` (docs/pipeline.md).
    """
    services = {"mlflow_tracking_uri": mlflow_tracking_uri, "s3_endpoint_url": s3_endpoint_url}
    evaluated = evaluate(
        model=model, data=data, patient_split=patient_split, params=params, **services, **RUN
    )
    cached(retried(needs_s3(needs_mlflow(placed(evaluated, where, "eval_gpus")))), True)
    checked = cached(
        sized(gate(evaluation=evaluated.outputs["evaluation"], params=params), "small"), True
    )
    with dsl.If(checked.outputs["Output"] == True, "gate-passed"):  # noqa: E712 (KFP condition)
        registered = register(
            model=model,
            evaluation=evaluated.outputs["evaluation"],
            data=data,
            patient_split=patient_split,
            params=params,
            **services,
            **RUN,
        )
        # writes the registry: never cached; idempotent per checkpoint under retry
        cached(retried(needs_s3(needs_mlflow(sized(registered, "register")))), False)


@dsl.pipeline(name="dsnet-retraining")
def retraining(
    data: Input[Dataset],
    data_version: str,
    params: Input[Artifact],
    force: bool,
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    gpu_type: str,
    gpu_count: int,
    gpu_node_selector: dict,
    distributed: bool,
    nodes: int,
    gpus_per_node: int,
):
    """Train, evaluate and register when the data changed since the champion (or force)."""
    check = check_data_changed(
        data_version=data_version,
        params=params,
        force=force,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    cached(retried(needs_mlflow(sized(check, "small"))), False)  # the registry changes
    with dsl.If(check.outputs["Output"] == True, "data-changed-or-forced"):  # noqa: E712
        patients = cached(sized(split(data=data, params=params), "data"), True)
        patient_split = patients.outputs["patient_split"]
        services = {"mlflow_tracking_uri": mlflow_tracking_uri, "s3_endpoint_url": s3_endpoint_url}
        placing = {
            "gpu_count": gpu_count,
            "gpu_type": gpu_type,
            "gpu_node_selector": gpu_node_selector,
        }
        with dsl.If(distributed == False, "single-node"):  # noqa: E712
            # in the group of the tasks it places: the compiler passes a task output into a
            # nested group's inputs only when a task *argument* uses it, not a resource
            where = cached(sized(placement(**placing), "small"), True)
            trained = train(
                data=data, patient_split=patient_split, params=params, **services, **RUN
            )
            cached(retried(needs_s3(needs_mlflow(placed(trained, where, "gpus")))), True)
            evaluate_and_register(
                trained.outputs["model"], data, patient_split, params,
                mlflow_tracking_uri, s3_endpoint_url, where,
            )  # fmt: skip
        with dsl.Else("multi-node"):
            where = cached(sized(placement(**placing), "small"), True)
            launched = train_distributed(
                data=data,
                patient_split=patient_split,
                params=params,
                **services,
                **RUN,
                image=BASE_IMAGE,
                image_pull_secrets=IMAGE_PULL_SECRETS,
                nodes=nodes,
                gpus_per_node=gpus_per_node,
                gpu_type=gpu_type,
                gpu_node_selector=gpu_node_selector,
                shared_dir=SHARED_DIR,
                timeout_s=TRAIN_TIMEOUT_S,
            )
            # a retry adopts the TrainJob of the same run (named after the run id)
            cached(retried(on_shared_volume(sized(launched, "data"))), True)
            evaluate_and_register(
                launched.outputs["model"], data, patient_split, params,
                mlflow_tracking_uri, s3_endpoint_url, where,
            )  # fmt: skip


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="DSNet (DS-attention Faster R-CNN) for opportunistic osteoporosis screening on "
    "lumbar CT: fetch or synthesise data, check for new data, split by patient, train on CPU "
    "or GPUs (one pod or a Kubeflow Trainer TrainJob), evaluate, gate, register in MLflow.",
)
def dsnet_pipeline(
    data_repo: str = "",
    data_revision: str = "main",
    data_path: str = "data/synthetic",
    params_file: str = "params.yaml",
    params_profile: str = "",
    backbone: str = "",
    attention: str = "",
    epochs: int = 0,
    lr: float = 0.0,
    batch_size: int = 0,
    min_map50: float = -1.0,
    min_recall: float = -1.0,
    min_acc: float = -1.0,
    mlflow_tracking_uri: str = MLFLOW_URI,
    s3_endpoint_url: str = S3_ENDPOINT,
    gpu_count: int = 0,
    gpu_type: str = "nvidia.com/gpu",
    gpu_node_selector: dict = {},  # noqa: B006 (KFP reads the default, never mutates it)
    distributed: bool = False,
    nodes: int = 2,
    gpus_per_node: int = 1,
    force: bool = False,
    intake_inbox: str = "",
):
    """DSNet training pipeline; the knobs left at ""/0/-1 keep the params file's values.

    Args:
        data_repo: Git URL of the DVC data repository; empty: the embedded synthetic data.
        data_revision: Branch, tag or commit of the data repository.
        data_path: The data dir inside the data repository.
        params_file: Base parameter file in the image (/opt/dsnet/params.yaml).
        params_profile: YAML text of sections merged over it (e.g. params/paper.yaml).
        backbone: resnet50, vgg16 or mobilenet_v3.
        attention: none, se, sk or ds.
        epochs: Training epochs.
        lr: Learning rate.
        batch_size: Images per batch (per process).
        min_map50: Gate: minimum mAP@0.5.
        min_recall: Gate: minimum recall.
        min_acc: Gate: minimum grade accuracy.
        mlflow_tracking_uri: MLflow tracking server and model registry.
        s3_endpoint_url: S3 endpoint of the DVC remote and MLflow artifacts.
        gpu_count: GPUs of the training pod (evaluation gets 1); 0: CPU pods, no GPU
            resource, toleration or node selector.
        gpu_type: Extended resource of the GPUs (its taint key is tolerated).
        gpu_node_selector: Node labels of the GPU pool, e.g. {"nvidia.com/gpu.present":
            "true"}; empty: GPU pods rely on the resource and the toleration.
        distributed: Train with a Kubeflow Trainer TrainJob on several nodes instead.
        nodes: TrainJob nodes (pods).
        gpus_per_node: GPUs per TrainJob node; 0 trains on CPU.
        force: Train even when the data did not change since the champion.
        intake_inbox: Inbox of new batches (s3://bucket/prefix); with a data_repo, the run
            first versions them (version_data) and trains on the result; empty: skip.
    """
    resolved = resolve_params(
        params_file=params_file,
        params_profile=params_profile,
        backbone=backbone,
        attention=attention,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        min_map50=min_map50,
        min_recall=min_recall,
        min_acc=min_acc,
    )
    cached(sized(resolved, "small"), True)
    params = resolved.outputs["params"]
    downstream = {
        "params": params,
        "force": force,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "s3_endpoint_url": s3_endpoint_url,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "gpu_node_selector": gpu_node_selector,
        "distributed": distributed,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
    }
    with dsl.If(data_repo == "", "embedded-synthetic-data"):
        synthesized = cached(sized(synth_data(params=params), "data"), True)
        retraining(
            data=synthesized.outputs["data"],
            data_version=synthesized.outputs["Output"],
            **downstream,
        )
    with dsl.Elif(intake_inbox == "", "dvc-data-repo"):
        fetched = fetch_data(
            repo_url=data_repo,
            revision=data_revision,
            path=data_path,
            s3_endpoint_url=s3_endpoint_url,
        )
        cached(retried(needs_s3(sized(fetched, "data"))), False)  # a branch moves: never cached
        retraining(
            data=fetched.outputs["data"], data_version=fetched.outputs["Output"], **downstream
        )
    # ---- data intake (optional): new inbox batches become a data version first ----
    with dsl.Else("dvc-data-repo-after-intake"):
        versioned = version_data(
            inbox=intake_inbox,
            data_repo=data_repo,
            data_branch=data_revision,
            data_path=data_path,
            dvc_remote="",
            params=params,
            mlflow_tracking_uri=mlflow_tracking_uri,
            s3_endpoint_url=s3_endpoint_url,
            **RUN,
        )
        cached(retried(needs_intake(sized(versioned, "data"))), False)  # moves the inbox
        fetched = fetch_data(
            repo_url=data_repo,
            revision=versioned.outputs["revision"],
            path=data_path,
            s3_endpoint_url=s3_endpoint_url,
        )
        cached(retried(needs_s3(sized(fetched, "data"))), True)  # a commit never moves
        retraining(
            data=fetched.outputs["data"], data_version=fetched.outputs["Output"], **downstream
        )
