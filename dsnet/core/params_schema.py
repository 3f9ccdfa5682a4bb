"""Every parameter the package reads, with its type and range: typos and absurd values fail.

`check_params(tree, origin)` walks a (partial) parameter tree, a params file or one
``-S`` override, and raises `InputError` naming the parameter and its origin for:

- a key that no code reads (``train.epoch``), listing the valid keys of that section and
  the closest one (`difflib`);
- a value of the wrong type or out of range (probabilities and fractions in [0, 1],
  thresholds, counts, learning rates...).

Only keys that are present are checked, so partial files (profiles, tests) are fine.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

from dsnet.core.errors import InputError

Check = Callable[[Any], str | None]
"""A value check: None when fine, else what is wrong (a phrase)."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Check:
    """A finite number in [low, high] (an open end with `open_low` / `open_high`)."""

    def check(value: Any) -> str | None:
        if not _number(value):
            return f"{value!r} is not a number"
        if low is not None and (value <= low if open_low else value < low):
            return f"{value} must be {'>' if open_low else '>='} {low:g}"
        if high is not None and (value >= high if open_high else value > high):
            return f"{value} must be {'<' if open_high else '<='} {high:g}"
        return None

    return check


def integer(low: int | None = None, high: int | None = None) -> Check:
    """An integer in [low, high]."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not an integer"
        return num(low, high)(value)

    return check


def choice(*values: Any) -> Check:
    """One of `values`."""

    def check(value: Any) -> str | None:
        if value in values and type(value) in {type(v) for v in values}:
            return None
        return f"{value!r} is not one of {', '.join(str(v) for v in values)}"

    return check


def text(value: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(value, str) and value else f"{value!r} is not a non-empty text"


def optional(check: Check) -> Check:
    """`check`, or null."""
    return lambda value: None if value is None else check(value)


def list_of(item: Check, length: int | None = None) -> Check:
    """A list of `item`s (of `length` when given)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list) or (length is not None and len(value) != length):
            return f"{value!r} is not a list" + (f" of {length}" if length else "")
        return next((p for p in map(item, value) if p), None)

    return check


def ordered(check: Check, descending: bool = False) -> Check:
    """A list `check` accepts, strictly ascending (or descending)."""

    def wrapped(value: Any) -> str | None:
        problem = check(value)
        if problem is None and any(
            (b >= a) if descending else (b <= a) for a, b in zip(value, value[1:], strict=False)
        ):
            return f"{value!r} must be strictly {'de' if descending else 'a'}scending"
        return problem

    return wrapped


def mapping_of(value_check: Check) -> Check:
    """A mapping from text to `value_check`ed values."""

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"{value!r} is not a mapping"
        return next((p for p in map(value_check, value.values()) if p), None)

    return check


PROBABILITY = num(0.0, 1.0)
POSITIVE = num(0.0, open_low=True)
COUNT = integer(1)
SEED = integer(0)
DEVICE = choice("auto", "cpu", "cuda")

SCHEMA: dict[str, Any] = {
    "data": {"dir": text},
    "synth": {
        "patients": COUNT,
        "seed": SEED,
        "slices_per_vertebra": integer(1, 8),
        "variants": PROBABILITY,
    },
    "preprocess": {
        "spacing_mm": num(0.0, 5.0, open_low=True),
        "canvas_px": integer(32, 4096),
        "windows": list_of(ordered(list_of(num(), 2))),
    },
    "split": {"test_fraction": num(0.0, 1.0, open_low=True, open_high=True), "seed": SEED},
    "model": {
        "backbone": choice("resnet50", "vgg16", "mobilenet_v3"),
        "attention": choice("none", "se", "sk", "ds"),
        "attention_residual": choice(True, False),
        "attention_groups": integer(1, 4096),
        "attention_reduction": integer(1, 1024),
        "weights": optional(text),
        "trainable_layers": integer(0, 5),
        "anchor_sizes": ordered(list_of(integer(1, 4096))),
        "detector": {  # torchvision FasterRCNN keyword arguments that YAML can give
            "rpn_pre_nms_top_n_train": COUNT,
            "rpn_post_nms_top_n_train": COUNT,
            "rpn_pre_nms_top_n_test": COUNT,
            "rpn_post_nms_top_n_test": COUNT,
            "rpn_nms_thresh": PROBABILITY,
            "rpn_fg_iou_thresh": PROBABILITY,
            "rpn_bg_iou_thresh": PROBABILITY,
            "rpn_batch_size_per_image": COUNT,
            "rpn_positive_fraction": num(0.0, 1.0, open_low=True),
            "rpn_score_thresh": PROBABILITY,
            "box_score_thresh": PROBABILITY,
            "box_nms_thresh": PROBABILITY,
            "box_detections_per_img": COUNT,
            "box_fg_iou_thresh": PROBABILITY,
            "box_bg_iou_thresh": PROBABILITY,
            "box_batch_size_per_image": COUNT,
            "box_positive_fraction": num(0.0, 1.0, open_low=True),
            "bbox_reg_weights": optional(list_of(POSITIVE, 4)),
            "image_mean": list_of(PROBABILITY, 3),
            "image_std": list_of(POSITIVE, 3),
        },
    },
    "train": {
        "device": DEVICE,
        "epochs": COUNT,
        "batch_size": COUNT,
        "lr": POSITIVE,
        "momentum": num(0.0, 0.999),
        "weight_decay": num(0.0, 1.0),
        "warmup_iters": integer(0),
        "lr_milestones": ordered(list_of(COUNT)),
        "lr_gamma": num(0.0, 1.0, open_low=True),
        "clip_grad_norm": optional(POSITIVE),
        "amp": choice(True, False),
        "cpu_bf16": choice("auto", True, False),
        "seed": SEED,
        "workers": integer(0, 256),
        "threads": lambda v: None if v == "auto" else integer(1, 1024)(v),
        "channels_last": choice(True, False),
        "cudnn_benchmark": choice(True, False),
        "augment": {
            "hflip": PROBABILITY,
            "intensity_jitter_hu": num(0.0, 1000.0),
            "scale": ordered(list_of(num(0.1, 10.0), 2)),
        },
    },
    "evaluate": {
        "score_threshold": PROBABILITY,
        "iou_threshold": num(0.0, 1.0, open_low=True),
        "hu_thresholds": ordered(list_of(num(-1000.0, 3000.0), 2), descending=True),
        "fps_warmup": integer(0),
        "decision_threshold": PROBABILITY,
        "device": DEVICE,
        "channels_last": choice(True, False),
        "cudnn_benchmark": choice(True, False),
        "review": {"bootstrap_draws": COUNT, "seed": SEED, "gallery_max": integer(0)},
    },
    "ablate": {"configs": list_of(text), "weights": mapping_of(text)},
    "register": {
        "model_name": text,
        "min_map50": PROBABILITY,
        "min_recall": PROBABILITY,
        "min_acc": PROBABILITY,
        "beat_hu_baseline": choice(True, False),
        "champion_margin": PROBABILITY,
    },
}
"""Section -> key -> check (or a nested section)."""


def check_params(tree: Mapping[str, Any], origin: str) -> None:
    """Check a parameter tree against `SCHEMA` (see the module docstring).

    Args:
        tree: Parameters (a whole file, or one override as a one-path tree).
        origin: Where they come from, for the message (a file, or ``-S key=value``).

    Raises:
        InputError: Naming the parameter and `origin`: an unknown key (with the valid
            keys and the closest match) or a value of the wrong type or range.

    """
    _walk(tree, SCHEMA, (), origin)


def _walk(tree: Any, schema: Mapping[str, Any], path: tuple[str, ...], origin: str) -> None:
    where = ".".join(path) or "the top level"
    if not isinstance(tree, Mapping):
        raise InputError(f"params {where} ({origin})", f"{tree!r} is not a section of keys")
    for key, value in tree.items():
        dotted = ".".join((*path, str(key)))
        spec = schema.get(key)
        if spec is None:
            valid = sorted(schema)
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {'.'.join((*path, close[0]))}? " if close else ""
            raise InputError(
                f"params {dotted} ({origin})",
                f"unknown parameter; {hint}valid keys of {where}: {', '.join(valid)}",
            )
        if isinstance(spec, Mapping):
            if value is not None:
                _walk(value, spec, (*path, str(key)), origin)
            continue
        problem = spec(value)
        if problem:
            raise InputError(f"params {dotted} ({origin})", problem)
