"""Component ``split``: patients (never slices) into train and test, by diagnosis."""

from kfp.dsl import Artifact, Dataset, Input, Output

from components import dsnet_component


@dsnet_component
def split(data: Input[Dataset], params: Input[Artifact], patient_split: Output[Artifact]):
    """Split the data dir's patients 4:1, stratified by diagnosis (dsnet split).

    A data dir produced by ``dsnet intake`` carries its own ``split.json``; it is passed as
    ``previous``, so patients keep their side as the data grows (docs/intake.md).

    Args:
        data: The data dir.
        params: The run's parameters (section split: test_fraction, seed).
        patient_split: split.json with the train and test patient ids.
    """
    from pathlib import Path

    from dsnet.core.config import load_params, section
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import describe_split, read_split, split_patients, write_split

    knobs = section(load_params([params.path]), "split")
    dataset = load_data_dir(data.path)
    carried = Path(data.path) / "split.json"
    result = split_patients(
        dataset,
        test_fraction=knobs.get("test_fraction", 0.2),
        seed=knobs.get("seed", 0),
        previous=read_split(carried) if carried.is_file() else None,
    )
    write_split(result, patient_split.path)
    patient_split.metadata["train_patients"] = len(result["train"])
    patient_split.metadata["test_patients"] = len(result["test"])
    print(describe_split(dataset, result))
