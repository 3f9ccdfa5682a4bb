"""The benchmark result as a plain-text table (no rich: it must print where only torch is)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PRECISION_ORDER = ("fp16", "bf16", "fp32")
SETTING_ORDER = ("channels_last", "cudnn_benchmark", "compile")
KIND_ORDER = ("train", "inference")


def format_table(result: dict[str, Any]) -> str:
    """Render a `dsnet.bench.gpu.bench_gpu` result for people.

    Four blocks: training images/s per precision (with the DS/plain time ratio, the peak
    GPU memory and the projected paper-profile hours of R50+DS), inference images/s per
    precision and batch, each setting's images/s off and on, and the headline projection.
    ``–`` marks a value not measured; the reason is listed under the block.

    Args:
        result: The result dict (as returned, or read back from the JSON).

    Returns:
        The table, lines joined with newlines (no trailing newline).

    """
    profile = result["profile"]
    lines = [
        f"dsnet bench gpu: {result['device']}, torch {result['torch']}, "
        f"torchvision {result['torchvision']}, {result['threads']} CPU threads"
        + (" (tiny)" if result["tiny"] else ""),
        f"profile: {profile['size']}x{profile['size']}, train batch {profile['batch_size']}, "
        f"SGD, profile precision {result['reference_precision']}, "
        f"channels_last {_onoff(profile['channels_last'])}, "
        f"cudnn_benchmark {_onoff(profile['cudnn_benchmark'])}; "
        f"{result['elapsed_s']:.0f} s, {result['status']}",
        "",
    ]
    lines += _block(
        "training (images/s)",
        ["precision", "R50", "R50+DS", "DS/plain", "peak MiB", "paper h"],
        [
            [
                key,
                _num(e.get("R50")),
                _num(e.get("R50+DS")),
                _ratio(e["ds_over_plain"]),
                _num(e.get("peak_memory_mib"), 0),
                _num(e["paper_profile_hours"], 2),
            ]
            for key, e in _ordered(result["training"])
        ],
        [e["unavailable"] for _, e in _ordered(result["training"])],
    )
    lines += _block(
        "inference (images/s)",
        ["precision, batch", "R50", "R50+DS", "DS/plain", "peak MiB"],
        [
            [
                key,
                _num(e.get("R50")),
                _num(e.get("R50+DS")),
                _ratio(e["ds_over_plain"]),
                _num(e.get("peak_memory_mib"), 0),
            ]
            for key, e in _ordered(result["inference"])
        ],
        [e["unavailable"] for _, e in _ordered(result["inference"])],
    )
    lines += _block(
        "settings (R50+DS, images/s)",
        ["setting", "stage", "off", "on", "on/off"],
        [
            [
                e["setting"],
                f"{e['kind']} b{e['batch_size']} {e['precision']}",
                _num(e.get("off")),
                _num(e.get("on")),
                _ratio(e["speedup"]),
            ]
            for _, e in _ordered(result["settings"])
        ],
        [e["unavailable"] for _, e in _ordered(result["settings"])],
    )
    paper = result["paper_profile"]
    hours = paper["hours"]
    lines.append(
        f"paper profile ({paper['model']}, {paper['precision']}, {paper['epochs']} epochs x "
        f"{paper['train_slices']} slices): "
        + (f"{hours:.2f} h at {paper['images_per_s']:.1f} images/s" if hours else "not measured")
        + (
            f"; peak GPU memory {result['peak_memory_mib']:.0f} MiB"
            if result["peak_memory_mib"] is not None
            else ""
        )
    )
    return "\n".join(lines)


def _ordered(table: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Entries in a fixed order (precision, setting, kind, batch), whatever the dict's."""

    def key(item: tuple[str, dict[str, Any]]) -> tuple:
        entry = item[1]
        return (
            SETTING_ORDER.index(entry["setting"]) if "setting" in entry else -1,
            KIND_ORDER.index(entry["kind"]) if "kind" in entry else -1,
            PRECISION_ORDER.index(entry["precision"]),
            entry["batch_size"],
        )

    return sorted(table.items(), key=key)


def _block(
    title: str, header: Sequence[str], rows: list[list[str]], notes: Sequence[str | None]
) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = (str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out = [title, line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out += [f"  note: {note}" for note in dict.fromkeys(n for n in notes if n)]
    return [*out, ""]


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _onoff(value: bool) -> str:
    return "on" if value else "off"
