"""``python -m dsnet.bench.gpu``: the benchmark without the ``dsnet`` CLI's dependencies.

Exit status 0 success, 2 bad input (one line on stderr). Run ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsnet.bench.gpu.measure import PRECISIONS
from dsnet.bench.gpu.profile import (
    TINY_BUDGET,
    TINY_PROFILE,
    BenchBudget,
    BenchProfile,
    with_bounds,
)
from dsnet.bench.gpu.run import bench_gpu
from dsnet.bench.gpu.table import format_table
from dsnet.core.errors import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m dsnet.bench.gpu",
        description="Training and inference speed of R50 and R50+DS at the paper profile "
        "(544 px canvas, batch 9): fp16/bf16/fp32, DS/plain ratios, peak GPU memory, projected "
        "paper-profile time, and the effect of channels_last, cudnn.benchmark, torch.compile.",
    )
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument(
        "--show", type=Path, metavar="JSON", help="only print the table of a result file"
    )
    parser.add_argument("--tiny", action="store_true", help="test size: 64 px, batch 2, one step")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument(
        "--precision",
        action="append",
        choices=tuple(PRECISIONS),
        help="precisions to compare (repeatable; default all)",
    )
    parser.add_argument("--iterations", type=int, help="timed iterations per stage at most")
    parser.add_argument("--warmup", type=int, help="untimed iterations per stage")
    parser.add_argument("--stage-seconds", type=float, help="time cap of one stage")
    parser.add_argument("--budget-seconds", type=float, help="no stage starts after this")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; return the exit status."""
    args = parse_args(argv)
    profile = TINY_PROFILE if args.tiny else BenchProfile()
    try:
        if args.show:
            print(format_table(read_result(args.show)))
            return 0
        budget = with_bounds(
            TINY_BUDGET if args.tiny else BenchBudget(),
            iterations=args.iterations,
            warmup=args.warmup,
            stage_seconds=args.stage_seconds,
            total_seconds=args.budget_seconds,
        )
        result = bench_gpu(
            profile,
            budget,
            args.device,
            args.precision or tuple(PRECISIONS),
            args.out,
            tiny=args.tiny,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def read_result(path: Path) -> dict:
    """Read a result JSON (complete, or partial from a run cut short)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable result: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
