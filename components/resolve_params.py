"""Component ``resolve_params``: the run's parameters, written once for every later step."""

from kfp.dsl import Artifact, Output

from components import dsnet_component


@dsnet_component
def resolve_params(
    params_file: str,
    params_profile: str,
    backbone: str,
    attention: str,
    epochs: int,
    lr: float,
    batch_size: int,
    min_map50: float,
    min_recall: float,
    min_acc: float,
    params: Output[Artifact],
):
    """Merge the image's params.yaml, a profile and the set knobs into params.yaml.

    Args:
        params_file: Base parameter file in the image (its working directory holds
            params.yaml).
        params_profile: Sections deep-merged over the base (e.g. params/paper.yaml).
        backbone: model.backbone; empty keeps the file's value.
        attention: model.attention; empty keeps the file's value.
        epochs: train.epochs; 0 keeps the file's value.
        lr: train.lr; 0 keeps the file's value.
        batch_size: train.batch_size; 0 keeps the file's value.
        min_map50: register.min_map50; negative keeps the file's value.
        min_recall: register.min_recall; negative keeps the file's value.
        min_acc: register.min_acc; negative keeps the file's value.
        params: The resolved parameters (YAML).
    """
    from dsnet.platform.run_params import resolve_run_params, write_run_params

    knobs = {
        "backbone": backbone,
        "attention": attention,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "min_map50": min_map50,
        "min_recall": min_recall,
        "min_acc": min_acc,
    }
    resolved = resolve_run_params(params_file, params_profile, knobs)
    params.metadata["params_hash"] = write_run_params(resolved, params.path)
    params.metadata["model"] = "{backbone}+{attention}".format(**resolved["model"])
