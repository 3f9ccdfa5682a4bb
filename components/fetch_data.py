"""Component ``fetch_data``: a data dir from the DVC data repository at a revision."""

from kfp.dsl import Dataset, Output

from components import dsnet_component


@dsnet_component
def fetch_data(
    repo_url: str, revision: str, path: str, s3_endpoint_url: str, data: Output[Dataset]
) -> str:
    """Clone the data repository at a revision and pull the data dir from its DVC remote.

    Args:
        repo_url: Git URL of the DVC data repository.
        revision: Branch, tag or commit (a branch moves: this step is never cached).
        path: The data dir inside the repository, e.g. data/synthetic.
        s3_endpoint_url: S3 endpoint of the DVC remote; AWS_* credentials come
            from a Kubernetes Secret.
        data: The data dir; metadata data_version (DVC hash) and commit.

    Returns:
        The data version (DVC hash), for the retraining check without a download.
    """
    from dsnet.platform.datasource import fetch_dvc_data

    fetched = fetch_dvc_data(repo_url, revision, path, data.path, endpoint_url=s3_endpoint_url)
    data.metadata.update(fetched)
    return fetched["data_version"]
