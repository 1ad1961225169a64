"""The fastest any library could run the perturbation benchmarks on this CPU.

Score-CAM (issue 3) and deletion/insertion (issue 6) spend their time in full ResNet-18 forwards
that no exact implementation can skip: one per channel and image for Score-CAM, one per step,
image and curve for deletion and insertion. This script measures the CPU's matrix-multiply
throughput in each precision and a ResNet-18 forward in each layout, counts the forward's FLOPs,
and prints the floor: the time those forwards would take at the measured GEMM peak. Dividing a
reference library's measured time by the floor bounds the speed-up any float implementation can
reach. The int8 GEMM rate and camlens's int8 copy (``precision="int8"``) show what leaving float
arithmetic buys.

    python benchmarks/cpu_ceiling.py --threads 1 --pgc-scorecam 60.0
    python benchmarks/cpu_ceiling.py --threads 2 --quantus-deletion 62.0 --images 8
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from camlens.backends.quantize import quantize_int8


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Throughput of a square matmul in GFLOP/s (2 n^3 FLOPs per product); a dtype the CPU only
    emulates (under 10 GFLOP/s on a 256 probe, e.g. fp16 without AVX512-FP16) is not run big."""
    if size > 256:
        probe = gemm_gflops(dtype, 256, 2)
        if probe < 10:
            return probe
    a = torch.rand(size, size).to(dtype)
    b = torch.rand(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def int8_gops(size: int = 2048, repeats: int = 5) -> float:
    """Throughput of an int8 x int8 -> int32 square matmul (``torch._int_mm``) in GOP/s."""
    a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
    b = torch.randint(-128, 128, (size, size), dtype=torch.int8)
    torch._int_mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch._int_mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def forward_ms(model: torch.nn.Module, x: torch.Tensor, bf16: bool = False) -> float:
    """Milliseconds per image of an inference-mode forward of the batch ``x``."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)
        start = time.perf_counter()
        model(x)
        model(x)
    return (time.perf_counter() - start) / 2 / x.shape[0] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="images per timed forward")
    parser.add_argument("--images", type=int, default=2, help="images explained or evaluated")
    parser.add_argument("--channels", type=int, default=512, help="Score-CAM layer channels")
    parser.add_argument("--steps", type=int, default=224, help="deletion/insertion steps")
    parser.add_argument("--pgc-scorecam", type=float, help="pytorch-grad-cam ScoreCAM seconds")
    parser.add_argument("--torchcam-scorecam", type=float, help="TorchCAM ScoreCAM seconds")
    parser.add_argument("--quantus-deletion", type=float, help="Quantus PixelFlipping seconds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = torchvision.models.resnet18().eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1])
    gflop = counter.get_total_flops() / 1e9
    print(f"threads {args.threads}; resnet18 forward at {args.size}px: {gflop:.2f} GFLOP")

    peaks = {
        name: gemm_gflops(dtype)
        for name, dtype in (
            ("fp32", torch.float32),
            ("bf16", torch.bfloat16),
            ("fp16", torch.float16),
        )
    }
    for name, peak in peaks.items():
        print(f"GEMM {name}: {peak:7.1f} GFLOP/s")
    int8_peak = int8_gops()
    print(f"GEMM int8: {int8_peak:7.1f} GOP/s (int32 accumulation)")

    last = model.to(memory_format=torch.channels_last)
    xl = x.contiguous(memory_format=torch.channels_last)
    timings = {
        "fp32 NCHW": forward_ms(model.to(memory_format=torch.contiguous_format), x),
        "fp32 channels-last": forward_ms(last.to(memory_format=torch.channels_last), xl),
        "bf16 autocast channels-last": forward_ms(last, xl, bf16=True),
        "int8 copy (precision='int8')": forward_ms(quantize_int8(model, x[:8]), xl),
    }
    best = max(peaks.values())
    floor_ms = gflop / best * 1e3
    for name, ms in timings.items():
        print(f"forward {name:28s} {ms:7.2f} ms/image ({gflop / ms * 1e3:6.1f} GFLOP/s)")
    print(f"floor at the best GEMM peak ({best:.1f} GFLOP/s): {floor_ms:.2f} ms/image")
    print(f"int8 floor ({int8_peak:.1f} GOP/s): {gflop / int8_peak * 1e3:.2f} ms/image")

    tasks = {
        "Score-CAM": (
            args.images * args.channels,
            {"pytorch-grad-cam": args.pgc_scorecam, "TorchCAM": args.torchcam_scorecam},
        ),
        "deletion + insertion": (
            2 * (args.steps + 1) * args.images,
            {"Quantus PixelFlipping": args.quantus_deletion},
        ),
    }
    for task, (count, references) in tasks.items():
        floor = count * floor_ms / 1e3
        print(f"{task}: {count} forwards, floor {floor:.1f} s")
        for name, seconds in references.items():
            if seconds:
                print(f"  at most {seconds / floor:.2f}x faster than {name} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
