"""``dsnet bench synth``: generation speed and memory of the synthetic data set.

Target: at least 20 slices/s in one process on a 2-core machine, with peak memory flat
in the number of patients (slices are rendered and written one at a time).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dsnet.synth.generate import synthesize


@dataclass(frozen=True)
class SynthBench:
    """One timed run of `synthesize`.

    Attributes:
        patients: Patients generated.
        slices: Slices written.
        seconds: Wall time of `synthesize` (rendering, DICOM encoding, writing).
        slices_per_s: ``slices / seconds``.
        cpu_seconds: CPU time of the process during `synthesize` (all threads); on a
            shared machine ``slices / cpu_seconds`` is the speed it would have alone.
        rss_before_mb: Peak resident memory of the process before generating (imports).
        peak_rss_mb: Peak resident memory of the process after generating.
        mb_written: Size of the data dir.
    """

    patients: int
    slices: int
    seconds: float
    slices_per_s: float
    cpu_seconds: float
    rss_before_mb: float
    peak_rss_mb: float
    mb_written: float

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    )  # bytes on macOS, KiB on Linux


def bench_synth(patients: int, seed: int = 0, slices_per_vertebra: int = 2) -> SynthBench:
    """Generate a data set into a temporary folder (deleted afterwards) and time it.

    Args:
        patients: Patients to generate.
        seed: Data set seed.
        slices_per_vertebra: Slices per vertebra.

    Returns:
        Speed and memory of the run.
    """
    before = _peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="dsnet-bench-synth-") as tmp:
        out = Path(tmp) / "data"
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = synthesize(out, patients, seed, slices_per_vertebra)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return SynthBench(
        patients=patients,
        slices=summary.slices,
        seconds=round(seconds, 3),
        slices_per_s=round(summary.slices / seconds, 2),
        cpu_seconds=round(cpu_seconds, 3),
        rss_before_mb=round(before, 1),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        mb_written=round(written / 2**20, 1),
    )
