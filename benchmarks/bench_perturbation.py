"""Score-CAM and Ablation-CAM: camlens against pytorch-grad-cam and TorchCAM, on the CPU.

resnet18 with random weights (seed 0), a batch of 2 random images, layer4, the same targets for
every library. Each case runs in its own subprocess so that its peak memory (max RSS above the
process's RSS once model and input are loaded) is its own. Maps are compared after each library's
own upsampling and min-max normalisation.

    python benchmarks/bench_perturbation.py            # 224x224, 1 thread, as in docs/benchmarks.md
    python benchmarks/bench_perturbation.py --size 112 --cases camlens-scorecam,pgc-scorecam
    python benchmarks/bench_perturbation.py --cases pgc-scorecam,torchcam-scorecam,\
camlens-scorecam-fp32,camlens-scorecam-int8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CASES = (
    "camlens-scorecam",
    "camlens-scorecam-fp32",
    "camlens-scorecam-bf16",
    "camlens-scorecam-int8",
    "pgc-scorecam",
    "torchcam-scorecam",
    "camlens-ablationcam",
    "pgc-ablationcam",
)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, size: int, out: Path, threads: int) -> dict:
    import torchvision

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import camlens

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).argmax(dim=1).tolist()
    base = rss_mib()
    start = time.perf_counter()
    if case.startswith("camlens"):
        method = case.split("-")[1]
        options = {"precision": case.split("-")[2]} if case.count("-") == 2 else {}
        exp = camlens.explain(
            model, x, method=method, layer="layer4", target=targets, progress=False, **options
        )
        maps = exp.maps
    elif case.startswith("pgc"):
        from pytorch_grad_cam import AblationCAM, ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = ScoreCAM if case.endswith("scorecam") else AblationCAM
        cam = cls(model, [model.layer4])
        maps = torch.from_numpy(cam(x, [ClassifierOutputTarget(t) for t in targets]))
    else:
        from torchcam.methods import ScoreCAM as TorchCAMScoreCAM

        with TorchCAMScoreCAM(model, "layer4", input_shape=(3, size, size)) as cam:
            with torch.no_grad():
                scores = model(x)
            small = cam(targets, scores)[0]
        maps = torch.nn.functional.interpolate(small[:, None], size=(size, size), mode="bilinear")
        maps = camlens.minmax(maps[:, 0])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(maps, out / f"{case}.pt")
    return {"case": case, "seconds": seconds, "peak_mib": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.size, Path(args.out), args.threads)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            command = [sys.executable, __file__, "--case", case, "--size", str(args.size)]
            command += ["--threads", str(args.threads)]
            done = subprocess.run([*command, "--out", tmp], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{case} failed:\n{done.stderr}")
            results[case] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{case:24s} {results[case]['seconds']:8.2f} s  "
                f"peak +{results[case]['peak_mib']:7.1f} MiB",
                flush=True,
            )
        maps = {case: torch.load(Path(tmp) / f"{case}.pt") for case in results}
    for method in ("scorecam", "ablationcam"):
        ref = f"pgc-{method}"
        if ref not in results:
            continue
        for case in results:
            if case != ref and method in case:
                gap = float((maps[case] - maps[ref]).abs().max())
                speed = results[ref]["seconds"] / results[case]["seconds"]
                print(f"{case:24s} vs {ref}: {speed:5.2f}x faster, max |map diff| {gap:.2e}")
    if "torchcam-scorecam" in results:
        for case in ("camlens-scorecam", "camlens-scorecam-fp32", "camlens-scorecam-int8"):
            if case in results:
                speed = results["torchcam-scorecam"]["seconds"] / results[case]["seconds"]
                print(f"{case:24s} vs torchcam-scorecam: {speed:5.2f}x faster")


if __name__ == "__main__":
    main()
