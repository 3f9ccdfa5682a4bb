"""Component ``evaluate``: the paper's metrics on the hold-out patients, with UI views."""

from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from components import dsnet_component


@dsnet_component
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    patient_split: Input[Artifact],
    params: Input[Artifact],
    mlflow_tracking_uri: str,
    s3_endpoint_url: str,
    kfp_run_id: str,
    pipeline_version: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[Markdown],
    review: Output[HTML],
):
    """Evaluate the model on the split's test patients (dsnet evaluate).

    Args:
        model: Folder with model.pt (and train_run.json: metrics go to that MLflow run).
        data: The data dir.
        patient_split: split.json.
        params: The run's parameters (sections preprocess, evaluate).
        mlflow_tracking_uri: MLflow tracking server.
        s3_endpoint_url: S3 endpoint of MLflow's artifact store.
        kfp_run_id: The KFP run id (tag kfp.run_id of the MLflow runs this step starts).
        pipeline_version: The compiled pipeline's version (tag kfp.pipeline_version).
        evaluation: Folder with metrics.json, plots/ (PR curves, confusion, loss) and
            review/ (evidence.json, report.html; the register step attaches them).
        metrics: mAP50, recall, accuracy, FPS, patient accuracy, HU baseline.
        confusion: True class x answer (plus missed), for the KFP UI.
        report: The metrics as Markdown tables.
        review: The review report (intervals, champion comparison, error gallery), one
            self-contained HTML page the KFP UI renders.
    """
    import os
    import shutil

    from dsnet.core.config import load_params
    from dsnet.core.fsutil import atomic_write_text
    from dsnet.evaluation.evaluate import evaluate as evaluate_model
    from dsnet.evaluation.review.evidence import review_paths
    from dsnet.platform.metrics_views import evaluation_markdown, kfp_confusion_matrix
    from dsnet.platform.services import use_services
    from dsnet.tracking.runs import numeric_metrics

    use_services(mlflow_tracking_uri, s3_endpoint_url, kfp_run_id, pipeline_version)
    plots = os.path.join(evaluation.path, "plots")
    os.makedirs(plots, exist_ok=True)
    loss_csv = os.path.join(model.path, "plots", "train_loss.csv")
    if os.path.isfile(loss_csv):  # evaluate draws the loss curve from it
        shutil.copy(loss_csv, plots)
    result = evaluate_model(
        os.path.join(model.path, "model.pt"),
        data.path,
        patient_split.path,
        os.path.join(evaluation.path, "metrics.json"),
        plots,
        load_params([params.path]),
    )
    for key, value in numeric_metrics(result).items():  # lists (confusion) stay out
        metrics.log_metric(key, value)
    categories, matrix = kfp_confusion_matrix(result)
    confusion.log_confusion_matrix(categories, matrix)
    atomic_write_text(report.path, evaluation_markdown(result))
    _, review_html = review_paths(os.path.join(evaluation.path, "metrics.json"))
    shutil.copyfile(review_html, review.path)
