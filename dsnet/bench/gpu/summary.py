"""The benchmark's tables, derived from its rows (so a partial result has them too)."""

from __future__ import annotations

from typing import Any

SECONDS_PER_HOUR = 3600.0


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Derive the tables of a `dsnet.bench.gpu.bench_gpu` result from its rows.

    The rows come in side-by-side pairs (R50 then R50+DS; a setting off then on).

    Args:
        result: The result so far (``rows``, ``profile``, ``reference_precision``).

    Returns:
        ``training``: per precision, images/s of ``R50`` and ``R50+DS``,
        ``ds_over_plain`` (DS time per image over plain's: plain rate / DS rate), peak
        memory and the projected paper-profile hours of R50+DS; ``inference``: per
        ``"<precision> batch <n>"``, the same without hours; ``settings``: per
        ``"<setting> <kind>"``, images/s ``off`` and ``on`` and ``speedup`` (on / off);
        ``paper_profile``: R50+DS at the profile's precision with
        ``hours = epochs × train_slices / images_per_s / 3600``; ``peak_memory_mib``: the
        largest of all rows (None on the CPU). Unmeasured values are None, with the reason
        in ``unavailable``.

    """
    profile = result["profile"]
    work = profile["epochs"] * profile["train_slices"]
    training, inference, settings = {}, {}, {}
    for plain, ds in _pairs(result["rows"]):
        compared = {
            "precision": plain["precision"],
            "batch_size": plain["batch_size"],
            "unavailable": plain["unavailable"] or ds["unavailable"],
        }
        if plain["group"] != "main":
            setting = plain["group"].removeprefix("setting:")
            settings[f"{setting} {plain['kind']}"] = compared | {
                "setting": setting,
                "kind": plain["kind"],
                "off": plain["images_per_s"],
                "on": ds["images_per_s"],
                "speedup": _ratio(ds["images_per_s"], plain["images_per_s"]),
            }
            continue
        compared |= {
            "R50": plain["images_per_s"],
            "R50+DS": ds["images_per_s"],
            "ds_over_plain": _ratio(plain["images_per_s"], ds["images_per_s"]),
            "peak_memory_mib": _largest([plain, ds]),
        }
        if plain["kind"] == "train":
            training[plain["precision"]] = compared | {
                "paper_profile_hours": _hours(work, ds["images_per_s"])
            }
        else:
            inference[f"{plain['precision']} batch {plain['batch_size']}"] = compared
    reference = training.get(result["reference_precision"], {}).get("R50+DS")
    return {
        "training": training,
        "inference": inference,
        "settings": settings,
        "paper_profile": {
            "model": "R50+DS",
            "precision": result["reference_precision"],
            "epochs": profile["epochs"],
            "train_slices": profile["train_slices"],
            "images_per_s": reference,
            "hours": _hours(work, reference),
        },
        "peak_memory_mib": _largest(result["rows"]),
    }


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _hours(images: int, images_per_s: float | None) -> float | None:
    return images / images_per_s / SECONDS_PER_HOUR if images_per_s else None


def _largest(rows: list[dict[str, Any]]) -> float | None:
    peaks = [row["peak_memory_mib"] for row in rows if row["peak_memory_mib"] is not None]
    return max(peaks) if peaks else None
