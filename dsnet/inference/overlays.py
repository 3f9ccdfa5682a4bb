"""Human-readable prediction outputs: the per-slice overlay PNG and ``report.md``.

The overlay shows the slice in a bone window in the radiological display frame (anterior
at the top, patient right on the image's left, whatever the stored orientation; marked
A/P/R/L and said in the header), enlarged to at least `MIN_SIDE_PX` for reading, the
`MAX_DRAWN` most confident detections boxed and numbered in the colour of their grade, a
side panel with a zoomed view of the top box and, per drawn detection, its grade, score
and trabecular mean HU with the HU-baseline class (the ROI where the HU was measured is
outlined in cyan), and a header with the patient and the slice's grade (its most
confident detection).
Drawn with Pillow, fast enough to keep the end-to-end prediction close to the bare model
time (see ``dsnet bench predict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dsnet.core.fsutil import atomic_path, atomic_write_text
from dsnet.io import CTSlice, window
from dsnet.models.hu_baseline import box_roi

if TYPE_CHECKING:
    from dsnet.inference.results import PredictSummary

MIN_SIDE_PX = 512
HEADER_PX = 44  # headline and one subtitle line; each further subtitle line adds LINE_PX
LINE_PX = 17
PANEL_PX = 300  # side panel: zoomed view of the top detection and the list of detections
MAX_DRAWN = 5  # most confident detections drawn; the JSON lists all of them
GRADE_COLOURS = {
    "normal": (46, 204, 113),
    "osteopenia": (255, 170, 30),
    "osteoporosis": (235, 60, 60),
}
OTHER_COLOUR = (80, 160, 255)
TEXT_GREY = (170, 170, 170)
ROI_COLOUR = (0, 220, 255)
DISCLAIMER = "Research prototype - not for diagnostic use"
FRAME_NOTE = "radiological view: A up, patient R on image left"


def _font(size: int):
    return ImageFont.load_default(size=size)


def _wrap(parts: Sequence[str], font: Any, width: float) -> list[str]:
    """Join `parts` with `` | `` into as few lines as fit `width` pixels (a part never splits)."""
    lines = [parts[0]]
    for part in parts[1:]:
        joined = f"{lines[-1]}  |  {part}"
        if font.getlength(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines


def _zoomed_view(grey: np.ndarray, roi: np.ndarray, box: Sequence[float], side: int):
    """A square crop around `box` (box plus half its size on each side), `side` px wide.

    The outline of the trabecular ROI (`roi`, bool [H, W], where the HU was measured) is
    drawn in cyan.

    Returns:
        ``(image, (left, top, factor))``: the RGB crop and how original pixel
        coordinates map into it, ``x' = (x - left) * factor``.

    """
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1, 8.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = cx - half, cy - half
    extent = (left, top, left + 2 * half, top + 2 * half)
    crop = (
        Image.fromarray(grey)
        .convert("RGB")
        .transform((side, side), Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR)
    )
    mask = Image.fromarray(roi.astype(np.uint8) * 255).transform(
        (side, side), Image.Transform.EXTENT, extent, Image.Resampling.NEAREST
    )
    outline = mask.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v else 0)
    crop.paste(ROI_COLOUR, mask=outline)
    return crop, (left, top, side / (2 * half))


def render_overlay(
    ct: CTSlice,
    record: Mapping[str, Any],
    bone_window: Sequence[float],
    out_png: str | Path,
) -> Path:
    """Draw the detections of one slice over its bone-window image.

    Layout: a header (patient, grade, file), the slice with numbered boxes in the colour
    of their grade, and a side panel with a zoomed view of the most confident box and one
    line per drawn detection (rank, grade, score, trabecular mean HU and HU class).

    Args:
        ct: The slice (``hu`` float32 [H, W] stored order; ``frame`` orients it).
        record: The slice's prediction JSON (`dsnet.inference.predict.slice_record`): boxes
            in stored pixels, labels, scores and per-detection HU.
        bone_window: (low, high) HU of the displayed window.
        out_png: Destination PNG (written atomically).

    Returns:
        `out_png`.

    """
    frame = ct.frame
    hu = frame.to_display(ct.hu)
    grey = (window(hu, float(bone_window[0]), float(bone_window[1])) * 255).astype(np.uint8)
    boxes = frame.boxes_to_display(np.array([d["box"] for d in record["detections"]]))
    height, width = grey.shape
    zoom = max(1.0, MIN_SIDE_PX / max(height, width))
    size = (round(width * zoom), round(height * zoom))
    picture = Image.fromarray(grey).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    small, large = _font(13), _font(16)
    pairs = list(zip(record["detections"], record["hu"]["detections"], strict=True))[:MAX_DRAWN]
    hidden = len(record["detections"]) - len(pairs)
    more = [f"{hidden} less confident boxes not drawn"] if hidden > 0 else []
    subtitle = _wrap(
        [Path(record["file"]).name, *more, FRAME_NOTE, DISCLAIMER], small, size[0] + PANEL_PX - 12
    )
    header = HEADER_PX + LINE_PX * (len(subtitle) - 1)
    canvas = Image.new("RGB", (size[0] + PANEL_PX, max(size[1], 2 * PANEL_PX) + header))
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)
    for rank, (det, _) in reversed(list(enumerate(pairs, start=1))):  # top one drawn last
        colour = GRADE_COLOURS.get(det["label"], OTHER_COLOUR)
        x1, y1, x2, y2 = (v * zoom for v in boxes[rank - 1])
        draw.rectangle((x1, y1 + header, x2, y2 + header), outline=colour, width=2)
        draw.text((x1 + 3, y1 + header + 1), str(rank), fill=colour, font=small)

    panel_x = size[0] + 10
    if pairs:
        roi = box_roi(hu, boxes[0])  # the ROI of box_mean_hu: placed in the display frame
        view, (left, top, factor) = _zoomed_view(grey, roi, boxes[0], PANEL_PX - 20)
        canvas.paste(view, (panel_x, header + 10))
        for index, (det, _) in reversed(list(enumerate(pairs))):
            x1, y1, x2, y2 = boxes[index]
            corners = [(x1 - left) * factor, (y1 - top) * factor, (x2 - left) * factor,
                       (y2 - top) * factor]  # fmt: skip
            if corners[2] < 0 or corners[3] < 0 or min(corners[0], corners[1]) > PANEL_PX - 20:
                continue
            corners = [min(max(c, 0), PANEL_PX - 21) for c in corners]
            draw.rectangle(
                (panel_x + corners[0], header + 10 + corners[1],
                 panel_x + corners[2], header + 10 + corners[3]),
                outline=GRADE_COLOURS.get(det["label"], OTHER_COLOUR), width=2,
            )  # fmt: skip
    y = header + PANEL_PX
    for rank, (det, hu) in enumerate(pairs, start=1):
        colour = GRADE_COLOURS.get(det["label"], OTHER_COLOUR)
        draw.text((panel_x, y), f"{rank}. {det['label']}  score {det['score']:.2f}", fill=colour,
                  font=large)  # fmt: skip
        hu_text = (
            "trabecular HU n/a"
            if hu["mean_hu"] is None
            else f"trabecular {hu['mean_hu']:.0f} HU -> {hu['label']}"
        )
        draw.text((panel_x + 18, y + 20), hu_text, fill=TEXT_GREY, font=small)
        y += 44
    if not pairs:
        draw.text((panel_x, y), "no vertebral body found", fill=TEXT_GREY, font=large)

    grade = record.get("grade")
    headline = f"Patient {record.get('patient_id') or '?'}  |  grade: {grade or 'none'}"
    draw.text((6, 4), headline, fill=GRADE_COLOURS.get(grade, (255, 255, 255)), font=large)
    for line_number, line in enumerate(subtitle):
        draw.text((6, 25 + LINE_PX * line_number), line, fill=TEXT_GREY, font=small)
    for text, (x, y) in (
        ("A", (size[0] / 2, header + 2)),
        ("P", (size[0] / 2, header + size[1] - 16)),
        ("R", (4, header + size[1] / 2)),
        ("L", (size[0] - 14, header + size[1] / 2)),
    ):
        draw.text((x, y), text, fill=(255, 255, 0), font=large)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG", compress_level=3)  # ~2.5x faster than 6, same size
    return out_png


def write_report(summary: PredictSummary, out_md: str | Path) -> Path:
    """Write ``report.md``: one table row per patient, then the files that failed.

    Returns:
        `out_md`.

    """
    lines = [
        "# DSNet prediction report",
        "",
        f"Model: `{summary.model}`. Files: {len(summary.files)}, "
        f"processed: {len(summary.files) - len(summary.failed)}, failed: {len(summary.failed)}.",
        "",
        "Grade = lowest bone-density class over the patient's slices (most confident "
        "detection per slice). HU baseline = class of the trabecular mean HU in the same box.",
        "",
        "| patient | slices | with detection | grade | HU baseline | lowest mean HU |",
        "|---|---|---|---|---|---|",
    ]
    for patient, info in summary.patients.items():
        lowest = info["hu_baseline"]["lowest_mean_hu"]
        lines.append(
            f"| {patient or '?'} | {info['n_slices']} | {info['n_slices_with_detection']} | "
            f"{info['grade'] or '-'} | {info['hu_baseline']['grade'] or '-'} | "
            f"{'-' if lowest is None else f'{lowest:.0f}'} |"
        )
    if summary.failed:
        lines += ["", "## Files not processed", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{f.file}` | {f.reason} |" for f in summary.failed]
    lines += ["", DISCLAIMER + ".", ""]
    return atomic_write_text(out_md, "\n".join(lines))
