"""Component ``gate``: the registration thresholds, decided before anything is registered."""

from kfp.dsl import Artifact, Input, Markdown, Output

from components import dsnet_component


@dsnet_component
def gate(
    evaluation: Input[Artifact],
    params: Input[Artifact],
    criteria: Output[Markdown],
) -> bool:
    """Check metrics.json against params.register (thresholds and the HU baseline).

    The comparison with the current champion needs the registry and re-evaluates the
    champion on this hold-out: dsnet.lifecycle.registry.register.register does it in the
    register step, which
    runs only when this gate passed and registers nothing when that comparison fails.

    Args:
        evaluation: Folder with metrics.json.
        params: The run's parameters (section register).
        criteria: Every criterion with value, threshold and result (Markdown).

    Returns:
        Whether no threshold failed (the reason is in criteria's metadata).
    """
    import os

    from dsnet.core.config import load_params, section
    from dsnet.core.fsutil import atomic_write_text
    from dsnet.lifecycle.registry.gate import description, gate_passed, read_metrics
    from dsnet.lifecycle.registry.gate import gate as registry_gate

    found = read_metrics(os.path.join(evaluation.path, "metrics.json"))
    settings = section(load_params([params.path]), "register")
    later = {"version": None, "note": "compared with the champion in the register step"}
    checked = registry_gate(found, settings, later)
    passed = gate_passed(checked)
    failed = [c["name"] for c in checked if c["status"] == "fail"]
    reason = "thresholds passed" if passed else "failed: " + ", ".join(failed)
    atomic_write_text(
        criteria.path, f"# Registration gate: {reason}\n\n" + description(found, checked)
    )
    criteria.metadata.update({"passed": passed, "reason": reason})
    print(reason)
    return passed
