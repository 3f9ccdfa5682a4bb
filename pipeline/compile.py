"""Compile the DSNet pipeline to ``pipeline/dsnet_pipeline.yaml`` (committed, deterministic).

Usage (repository root)::

    python pipeline/compile.py                      # rewrite pipeline/dsnet_pipeline.yaml
    python pipeline/compile.py --out /tmp/p.yaml    # write elsewhere
    python pipeline/compile.py --check              # exit 1 when the committed YAML is stale
    DSNET_IMAGE_PULL_SECRETS=dsnet-registry python pipeline/compile.py --out my.yaml

The image is the one ``infra/k8s/image/kustomization.yaml`` names (``components.DEFAULT_IMAGE``,
the overlays' image too); set it to the tag you pushed and compile your copy
(docs/operations.md). ``DSNET_IMAGE`` overrides it for one compile; ``--check`` needs it unset.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python pipeline/compile.py` puts pipeline/ first, not the root
    sys.path.insert(0, str(ROOT))

from kfp import compiler  # noqa: E402

from components import BASE_IMAGE, DEFAULT_IMAGE  # noqa: E402
from pipeline.dsnet_pipeline import dsnet_pipeline  # noqa: E402

PACKAGE = ROOT / "pipeline" / "dsnet_pipeline.yaml"


def compile_pipeline(out: Path) -> Path:
    """Compile the pipeline (with its Kubernetes platform spec) to `out`; return `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", dir=out.parent, delete=False, prefix=f".{out.stem}."
    ) as tmp:
        staging = Path(tmp.name)
    try:
        compiler.Compiler().compile(dsnet_pipeline, str(staging))
        staging.replace(out)
    finally:
        staging.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Compile (or, with ``--check``, compare with the committed file); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE, help="where to write the YAML")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed YAML is stale"
    )
    args = parser.parse_args(argv)
    if args.check and BASE_IMAGE != DEFAULT_IMAGE:
        print("--check compares the default-image build: unset DSNET_IMAGE", file=sys.stderr)
        return 2
    if not args.check:
        print(compile_pipeline(args.out))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        fresh = compile_pipeline(Path(scratch) / PACKAGE.name).read_text(encoding="utf-8")
    current = PACKAGE.read_text(encoding="utf-8") if PACKAGE.exists() else ""
    if fresh != current:
        print(f"{PACKAGE}: stale; run python pipeline/compile.py", file=sys.stderr)
        return 1
    print(f"{PACKAGE}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
