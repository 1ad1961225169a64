"""Timing helpers shared by the benchmarks: interleaved repeats, medians, peak memory."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable


def interleaved(runs: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1):
    """Median seconds per call of each function, run in turns so load changes hit all alike."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(medians: dict[str, float], baseline: str) -> str:
    """A markdown table of medians with each one's speed-up over ``baseline``."""
    lines = ["| implementation | median s/call | camlens speed-up |", "|---|---|---|"]
    ours = medians["camlens"]
    for name, seconds in medians.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / ours:.2f}x |")
    return "\n".join(lines)


def model_arguments(device: bool = False):
    """Parsed ``--repeats --batch --size --model [--device] --quick`` of a one-model benchmark
    (ResNet-50, batch 2 at 224 px, 3 repeats; ``--quick``: ResNet-18, one 112 px image, once)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="resnet50")
    if device:
        parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.model, args.size, args.batch, args.repeats = "resnet18", 112, 1, 1
    return args
