from pathlib import Path

import pytest

from dsnet.core.config import apply_override, load_params, params_hash
from dsnet.core.errors import InputError


def test_overrides_and_profiles_merge(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 8\n  lr: 0.01\nmodel:\n  backbone: resnet50\n")
    profile = tmp_path / "paper.yaml"
    profile.write_text("train:\n  epochs: 100\n")
    params = load_params([base, profile], ["train.lr=0.02", "model.attention=ds"])
    assert params["train"] == {"epochs": 100, "lr": 0.02}
    assert params["model"] == {"backbone": "resnet50", "attention": "ds"}


def test_params_hash_depends_only_on_selected_sections():
    a = {"train": {"epochs": 1}, "synth": {"seed": 1}}
    b = {"train": {"epochs": 1}, "synth": {"seed": 2}}
    assert params_hash(a, ["train"]) == params_hash(b, ["train"])
    assert params_hash(a) != params_hash(b)


def test_bad_yaml_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: invalid YAML"):
        load_params([bad])
    with pytest.raises(InputError, match="section.key=value"):
        apply_override({}, "no-equals-sign")


def test_repository_params_have_every_stage_section(params):
    for name in ("synth", "preprocess", "split", "model", "train", "evaluate", "register"):
        assert isinstance(params[name], dict), name


def test_exponent_numbers_are_numbers_in_files_and_overrides(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    loaded = load_params([params], ["train.momentum=9e-1"])
    assert loaded["train"] == {"lr": 0.001, "weight_decay": 0.0005, "momentum": 0.9}


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.epoch=3", "did you mean train.epochs?"),
        ("evaluate.decision_threshold=2", "must be <= 1"),
        ("evaluate.decision_threshold=abc", "is not a number"),
        ("split.test_fraction=0", "must be > 0"),
        ("model.attention=ds2", "is not one of none, se, sk, ds"),
    ],
)
def test_unknown_keys_and_out_of_range_values_are_refused(override, fragment):
    with pytest.raises(InputError, match=fragment) as caught:
        load_params([Path(__file__).resolve().parents[1] / "params.yaml"], [override])
    assert caught.value.path.endswith(f"(-S {override})")
