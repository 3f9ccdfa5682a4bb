"""One-shot GPU benchmark of the paper profile (``dsnet bench gpu``, ``python -m dsnet.bench.gpu``).

Training and inference images/s of R50 and R50+DS on synthetic slices shaped like the paper
profile, in float16 / bfloat16 autocast and float32, the DS/plain ratios, peak GPU memory,
the projected paper-profile wall time, and what ``channels_last``, ``cudnn.benchmark`` and
``torch.compile`` each change. Needs only torch, torchvision and numpy (the GPU machines
this runs on have nothing else), so nothing on this path imports YAML, rich or typer.
See docs/training.md for running it and reading the table.
"""

from dsnet.bench.gpu.profile import TINY_BUDGET, TINY_PROFILE, BenchBudget, BenchProfile
from dsnet.bench.gpu.run import bench_gpu
from dsnet.bench.gpu.table import format_table

__all__ = [
    "TINY_BUDGET",
    "TINY_PROFILE",
    "BenchBudget",
    "BenchProfile",
    "bench_gpu",
    "format_table",
]
