"""Component ``check_data_changed``: train only when the data changed since the champion."""

from kfp.dsl import Artifact, Input, Markdown, Output

from components import dsnet_component


@dsnet_component
def check_data_changed(
    data_version: str,
    params: Input[Artifact],
    force: bool,
    mlflow_tracking_uri: str,
    decision: Output[Markdown],
) -> bool:
    """Compare the data's DVC hash with the champion's data_version tag.

    Args:
        data_version: DVC hash of the data dir, as the step that produced it computed it
            (no download of the data here).
        params: The run's parameters (register.model_name).
        force: Retrain even when the data did not change.
        mlflow_tracking_uri: MLflow tracking server with the model registry.
        decision: Why the run trains or ends here (Markdown).

    Returns:
        Whether the training steps run (the reason is in decision's metadata: a single
        output keeps the condition on it readable for kfp.local too).
    """
    from dsnet.core.config import load_params
    from dsnet.core.fsutil import atomic_write_text
    from dsnet.platform.retraining import decision_markdown, retraining_decision
    from dsnet.platform.services import use_services

    use_services(mlflow_tracking_uri)
    verdict = retraining_decision(data_version, load_params([params.path]), force)
    atomic_write_text(decision.path, decision_markdown(verdict))
    decision.metadata.update({k: v for k, v in verdict.items() if v is not None})
    print(verdict["reason"])
    return verdict["retrain"]
