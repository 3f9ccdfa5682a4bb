"""Component ``synth_data``: the embedded synthetic lumbar-CT data set (the default data)."""

from kfp.dsl import Artifact, Dataset, Input, Output

from components import dsnet_component


@dsnet_component
def synth_data(params: Input[Artifact], data: Output[Dataset]) -> str:
    """Generate the synthetic data dir (DICOM slices, COCO boxes, DXA T-scores).

    Args:
        params: The run's parameters (section synth: patients, seed, slices_per_vertebra).
        data: The data dir; metadata data_version is its DVC hash.

    Returns:
        The data version (DVC hash), for the retraining check without a download.
    """
    from dsnet.core.config import load_params, section
    from dsnet.synth.generate import synthesize
    from dsnet.tracking.lineage import data_version

    knobs = section(load_params([params.path]), "synth")
    summary = synthesize(
        data.path,
        patients=int(knobs["patients"]),
        seed=int(knobs["seed"]),
        slices_per_vertebra=int(knobs.get("slices_per_vertebra", 2)),
    )
    data.metadata["data_version"] = data_version(data.path)
    data.metadata["source"] = "dsnet.synth.generate seed {}".format(knobs["seed"])
    data.metadata["patients"] = summary.patients
    data.metadata["images"] = summary.slices
    return data.metadata["data_version"]
