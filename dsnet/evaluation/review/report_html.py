"""Render review evidence (`dsnet.evaluation.review.evidence`) as one self-contained HTML page.

Everything is inline: CSS in a ``<style>`` element, images as ``data:image/png;base64``
URIs; there is no script and no external reference, so the page reads the same offline, in
the MLflow artifact viewer and in the KFP UI. Every metric cell carries its exact value in
``data-metric`` / ``data-value`` attributes (what the tests compare with ``metrics.json``).
Text is escaped with :func:`html.escape`; the page skeleton is a :class:`string.Template`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any

from dsnet.evaluation.review.card import LINEAGE_FIELDS, TRAINING_FIELDS

# docs/metrics.md order; per-class AP rows follow map50.
METRIC_ORDER = (
    "map50",
    "ap_per_class.normal",
    "ap_per_class.osteopenia",
    "ap_per_class.osteoporosis",
    "ap50_agnostic",
    "recall",
    "acc",
    "patient_acc",
    "hu_baseline_acc",
    "hu_baseline_patient_acc",
    "hu_baseline_pred_box_acc",
    "hu_baseline_pred_box_patient_acc",
    "fps",
    "seconds_per_image",
)
LOWER_IS_BETTER = frozenset({"seconds_per_image"})
DISCLAIMER = "Research prototype - not for diagnostic use."

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5rem; color: #1d2733; background: #fafbfc; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #d0d7de;
padding-bottom: .2rem; margin-top: 2rem; }
.sub { color: #57606a; margin-top: 0; }
.banner { background: #fff3cd; border: 1px solid #e0b400; padding: .6rem .9rem;
          border-radius: 6px; font-weight: 600; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; }
th { background: #eef1f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pass td.status { color: #116329; font-weight: 600; }
tr.fail td.status { color: #b42318; font-weight: 600; }
tr.skipped td.status { color: #57606a; }
.better { color: #116329; } .worse { color: #b42318; } .unclear { color: #57606a; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots figure { max-width: 480px; }
.plots figure, .gallery figure { margin: 0; background: #fff; border: 1px solid #d0d7de;
  border-radius: 6px; padding: .5rem; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(530px, 1fr));
           gap: .8rem; }
figcaption { font-size: .85rem; margin-top: .3rem; }
img { max-width: 100%; height: auto; display: block; }
.wrong { color: #b42318; font-weight: 600; }
td.ci { white-space: nowrap; }
footer { margin-top: 2rem; color: #57606a; font-size: .85rem; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
$banner
<h2 id="card">Model card</h2>
$card
<h2 id="gate">Quality gate</h2>
$gate
<h2 id="metrics">Metrics with patient-level bootstrap 95 % intervals</h2>
$metrics
<h2 id="champion">Challenger vs champion on the same hold-out</h2>
$champion
<h2 id="plots">Confusion matrices, precision-recall and loss curves</h2>
<div class="plots">$plots</div>
<h2 id="errors">Error gallery</h2>
$gallery
<h2 id="patients">Per-patient results</h2>
$patients
<footer>$footer</footer>
</body>
</html>
""")


def esc(value: Any) -> str:
    """Escape any value for HTML text or attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    """A number for people (``—`` when undefined)."""
    return "—" if value is None else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], css: Sequence[str] = ()) -> str:
    """An HTML table; `rows` hold cell HTML (already escaped), `css` one class per row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join(
        f'<tr class="{esc(css[i]) if i < len(css) else ""}">{"".join(row)}</tr>'
        for i, row in enumerate(rows)
    )
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def cell(text: Any, css: str = "") -> str:
    """One escaped table cell."""
    return f'<td class="{css}">{esc(text)}</td>' if css else f"<td>{esc(text)}</td>"


def metric_cell(key: str, value: float | None, role: str = "value") -> str:
    """A numeric cell carrying the exact value for machines (``data-*`` attributes)."""
    exact = "" if value is None else repr(float(value))
    return (
        f'<td class="num" data-metric="{esc(key)}" data-role="{esc(role)}" '
        f'data-value="{esc(exact)}">{esc(number(value))}</td>'
    )


def image(b64: str | None, alt: str) -> str:
    """An inline PNG (or a note when the plot was not produced)."""
    if not b64:
        return f"<p>{esc(alt)}: not produced.</p>"
    return f'<img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'


def ci(low: float | None, high: float | None) -> str:
    """A 95 % interval as text."""
    return "—" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def card_html(card: Mapping[str, Any]) -> str:
    """The model card: use, data, training profile and lineage tables."""
    data, training, lineage = card["data"], card["training"], card["lineage"]
    use = table(
        ["", ""],
        [
            ["<th>Intended use</th>", cell(card["intended_use"])],
            ["<th>Not intended for</th>", cell(card["not_intended_use"])],
        ],
    )
    rows = [
        ["data", "synthetic" if data["synthetic"] else "real (de-identified)"],
        ["source", data["source"]],
        ["data dir", data["dir"]],
        ["data version (DVC)", data["version"]],
        ["hold-out", f"{data['holdout_patients']} patients, {data['holdout_slices']} slices"],
    ]
    for title, values, fields in (
        ("training", training, TRAINING_FIELDS),
        ("lineage", lineage, LINEAGE_FIELDS),
    ):
        rows += [[f"{title}: {k.replace('_', ' ')}", _recorded(values.get(k))] for k in fields]
    details = table(["", ""], [[f"<th>{esc(k)}</th>", cell(v)] for k, v in rows])
    return use + details


def _recorded(value: Any) -> Any:
    """`value`, or ``not recorded`` when the checkpoint or run did not record it."""
    return "not recorded" if value is None or value == "" else value


def gate_html(criteria: Sequence[Mapping[str, Any]] | None) -> str:
    """The gate's criteria table, or a note when the gate has not run yet."""
    if criteria is None:
        return (
            "<p>The gate runs at registration (<code>dsnet register</code>); the report "
            "attached to the registered version carries its criteria.</p>"
        )
    rows, css = [], []
    for c in criteria:
        threshold = "—" if c["threshold"] is None else f"{c['op']} {c['threshold']:.4f}"
        rows.append(
            [cell(c["name"]), metric_cell(f"gate.{c['name']}", c["value"]), cell(threshold),
             cell(c["status"], "status"), cell(c.get("note", ""))]
        )  # fmt: skip
        css.append(c["status"])
    verdict = "passed" if all(c["status"] != "fail" for c in criteria) else "failed"
    return f"<p>Gate <strong>{verdict}</strong>.</p>" + table(
        ["criterion", "value", "threshold", "result", "note"], rows, css
    )


def metrics_html(evidence: Mapping[str, Any]) -> str:
    """Every metric with its interval (and the champion's, when there is one)."""
    intervals, boot = evidence["intervals"], evidence["bootstrap"]
    paired = evidence.get("champion") is not None
    header = ["metric", "value", "95 % interval"]
    if paired:
        header += ["champion", "95 % interval", "difference", "95 % interval", "verdict"]
    rows = []
    for key in [k for k in METRIC_ORDER if k in intervals]:
        row = intervals[key]
        cells = [cell(key), metric_cell(key, row["value"]), cell(ci(row["low"], row["high"]), "ci")]
        if paired and "diff" in row:
            cells += [
                metric_cell(key, row["reference"], "champion"),
                cell(ci(row["reference_low"], row["reference_high"]), "ci"),
                metric_cell(key, row["diff"], "difference"),
                cell(ci(row["diff_low"], row["diff_high"]), "ci"),
                verdict_cell(key, row["diff_low"], row["diff_high"]),
            ]
        rows.append(cells)
    note = (
        f"<p>Intervals: {boot['draws']} draws of the {boot['patients']} hold-out patients "
        f"with replacement (seed {boot['seed']}), metrics recomputed on each draw; 2.5th-97.5th "
        "percentiles. Definitions: docs/metrics.md. Speed is measured on "
        f"{esc(evidence['metrics'].get('device', '?'))}.</p>"
    )
    return note + table(header, rows)


def verdict_cell(key: str, low: float | None, high: float | None) -> str:
    """Whether the paired interval excludes zero, in words."""
    if low is None or high is None:
        return cell("undefined", "unclear")
    lower_better = key in LOWER_IS_BETTER
    if (high < 0) if lower_better else (low > 0):
        return cell("challenger better", "better")
    if (low > 0) if lower_better else (high < 0):
        return cell("challenger worse", "worse")
    return cell("no clear difference", "unclear")


def champion_html(evidence: Mapping[str, Any]) -> str:
    """Champion identity and the boxes where the two models answer differently."""
    champion = evidence.get("champion")
    if champion is None:
        return (
            "<p>No champion to compare with (none promoted yet, or the champion is this model).</p>"
        )
    rows = [
        [cell(d["patient_id"]), cell(d["vertebra"]), cell(d["image_id"]), cell(d["truth"]),
         cell(f"{d['challenger']} {number(d['challenger_score'], 2)}"),
         cell(f"{d['champion']} {number(d['champion_score'], 2)}"), cell(d["right"])]
        for d in champion["disagreements"]
    ]  # fmt: skip
    intro = (
        f"<p>Champion: version {esc(champion['version'])} (checkpoint "
        f"{esc(champion['checkpoint_sha256'][:12])}), run on the same "
        f"{evidence['card']['data']['holdout_slices']} slices. Both models' metrics and the "
        "paired differences (challenger - champion, same bootstrap draws) are in the metrics "
        f"table above. The two disagree on {len(rows)} vertebral bodies:</p>"
    )
    listing = (
        table(
            [
                "patient",
                "vertebra",
                "image",
                "truth",
                "challenger (score)",
                "champion (score)",
                "right",
            ],
            rows,
        )  # fmt: skip
        if rows
        else "<p>They agree on every ground-truth box.</p>"
    )
    return intro + listing


def plots_html(evidence: Mapping[str, Any]) -> str:
    """The evaluation's plots (and the champion's confusion matrix) as figures."""
    plots = evidence["plots"]
    figures = [
        ("confusion_matrix", plots.get("confusion_matrix"), "Confusion matrix (this model)"),
        ("pr_curves", plots.get("pr_curves"), "Precision-recall curves at IoU 0.5"),
        ("train_loss", plots.get("train_loss"), "Training loss"),
    ]
    champion = evidence.get("champion")
    if champion is not None:
        figures.insert(
            1,
            ("champion_confusion", champion.get("confusion_png"),
             f"Confusion matrix (champion v{champion['version']})"),
        )  # fmt: skip
    return "".join(
        f'<figure id="plot-{key}">{image(b64, caption)}<figcaption>{esc(caption)}</figcaption>'
        "</figure>"
        for key, b64, caption in figures
    )


def gallery_html(evidence: Mapping[str, Any]) -> str:
    """The drawn errors with truth, answer, score and ROI HU in each caption."""
    shown, total = evidence["gallery"], evidence["errors_total"]
    if total == 0:
        return "<p>No hold-out slice was missed or misgraded.</p>"
    note = (
        f"<p>{total} missed or misgraded vertebral bodies on the hold-out; "
        + (f"all {total} shown" if len(shown) == total else f"the worst {len(shown)} shown "
           f"(evaluate.review.gallery_max = {evidence['gallery_max']})")
        + ". White: ground-truth box; coloured: the model's answer (green normal, orange "
        "osteopenia, red osteoporosis); cyan: the trabecular ROI of the ground-truth box.</p>"
    )  # fmt: skip
    figures = []
    for e in shown:
        answer = "missed" if e["score"] is None else f"{e['answer']} (score {e['score']:.2f})"
        caption = (
            f"<strong>{esc(e['patient_id'])} {esc(e['vertebra'])}</strong> image {e['image_id']}"
            f"<br>truth <strong>{esc(e['truth'])}</strong>, answer "
            f'<span class="wrong">{esc(answer)}</span><br>ROI HU in truth box '
            f"{number(e['gt_hu'], 0)}, in answer box {number(e['answer_hu'], 0)}"
        )
        figures.append(
            f"<figure>{image(e['png'], 'error overlay')}<figcaption>{caption}</figcaption></figure>"
        )
    return note + f'<div class="gallery">{"".join(figures)}</div>'


def patients_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-patient table."""
    body = [
        [cell(r["patient"]), cell(r["slices"]), cell(r["dxa_class"]),
         cell(r["predicted"], "" if r["correct"] else "wrong"), cell(r["hu_baseline"]),
         cell(number(r["lowest_vertebra_hu"], 0), "num")]
        for r in rows
    ]  # fmt: skip
    header = ["patient", "slices", "DXA class (truth)", "model grade", "HU-baseline grade",
              "lowest vertebra mean HU"]  # fmt: skip
    return (
        "<p>Model grade: lowest grade over the patient's vertebrae, each graded by its most "
        "confident slice; HU baseline: trabecular mean HU in the ground-truth box.</p>"
        + table(header, body)
    )


def render_report(evidence: Mapping[str, Any]) -> str:
    """Render the whole page from an evidence document.

    Args:
        evidence: As built by `dsnet.evaluation.review.evidence.build_evidence`, optionally with
            ``criteria`` (the gate's) and ``version`` (the registered version) filled in.

    Returns:
        The HTML text.

    """
    card = evidence["card"]
    version = evidence.get("version")
    title = "DSNet review report" + (f": version {version}" if version else "")
    subtitle = (
        f"checkpoint {esc(evidence['checkpoint_sha256'][:12])} · "
        f"{esc(card['training']['backbone'])}+{esc(card['training']['attention'])} · "
        f"evaluated {esc(evidence['created_utc'])}"
    )
    banner = (
        '<p class="banner">Synthetic data: every number below describes the pipeline on '
        "simulated CT, not clinical performance.</p>"
        if card["data"]["synthetic"]
        else ""
    )
    return PAGE.substitute(
        title=esc(title),
        subtitle=subtitle,
        banner=banner,
        card=card_html(card),
        gate=gate_html(evidence.get("criteria")),
        metrics=metrics_html(evidence),
        champion=champion_html(evidence),
        plots=plots_html(evidence),
        gallery=gallery_html(evidence),
        patients=patients_html(evidence["patients"]),
        footer=esc(DISCLAIMER + " Built by dsnet evaluate; definitions in docs/metrics.md."),
    )
