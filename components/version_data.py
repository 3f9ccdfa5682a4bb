"""Component ``version_data``: new inbox batches become a new version of the curated data."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Markdown, Output

from components import dsnet_component


@dsnet_component
def version_data(
    inbox: str,
    data_repo: str,
    data_branch: str,
    data_path: str,
    dvc_remote: str,
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    kfp_run_id: str,
    pipeline_version: str,
    summary: Output[Markdown],
) -> NamedTuple("Outputs", [("revision", str), ("data_version", str), ("new_versions", int)]):
    """Ingest the inbox's new batches into the data repository and push each version (dsnet intake).

    Args:
        inbox: Inbox of batches, s3://bucket/prefix (the key comes from env DSNET_DEID_KEY).
        data_repo: Git URL of the DVC data repository (push access from the environment).
        data_branch: Its data branch.
        data_path: The curated data dir inside it.
        dvc_remote: DVC remote to push to; empty: the repository's default.
        params: The run's parameters (section split: the split carried forward).
        mlflow_tracking_uri: MLflow tracking server (an "intake" run with the data report).
        s3_endpoint_url: S3 endpoint of the inbox and the DVC remote.
        kfp_run_id: The KFP run id (tag kfp.run_id of the MLflow runs this step starts).
        pipeline_version: The compiled pipeline's version (tag kfp.pipeline_version).
        summary: What happened to each batch, and the data version (Markdown).

    Returns:
        revision: The commit holding the current data version (fetch_data reads it).
        data_version: DVC hash of the curated data dir.
        new_versions: Versions this step made (0: the data is unchanged).
    """
    from collections import namedtuple

    from dsnet.core.config import load_params, section
    from dsnet.core.fsutil import atomic_write_text
    from dsnet.platform.services import use_services
    from dsnet.platform.version_data import intake_markdown, version_data_repo

    use_services(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version)
    split = section(load_params([params.path]), "split")
    result, commit = version_data_repo(
        inbox,
        data_repo,
        data_branch,
        data_path,
        remote=dvc_remote or None,
        endpoint=s3_endpoint_url,
        test_fraction=split.get("test_fraction", 0.2),
        seed=split.get("seed", 0),
    )
    atomic_write_text(summary.path, intake_markdown(result, commit))
    summary.metadata.update({"commit": commit, **result.totals()})
    summary.metadata.update({"data_version": result.data_version or "", "tag": result.tag or ""})
    print(intake_markdown(result, commit))
    outputs = namedtuple("Outputs", ["revision", "data_version", "new_versions"])
    return outputs(commit, result.data_version or "", result.new_versions)
