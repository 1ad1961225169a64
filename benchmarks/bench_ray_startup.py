"""Where the fixed cost of ``camlens explain --engine ray`` goes: Ray's start, the actors'
construction, the first batch.

Each configuration (model x actors) runs in a fresh process, as a user's command does: the
driver builds its session (``driver model``), Ray starts on this machine (``num_cpus`` 2,
``ray.init``), the driver lists the inputs and starts the dataset (``pipeline start``); each
model actor's process is born (``actor process``), has imported camlens and torch and entered
``Worker.__init__`` (``actor imported``), has its session (``actor ready``); the first batch
comes back to the driver (``first batch out``) and the run ends (``end``). Times are seconds of
wall clock from the start of the run's call (after the driver's session); the actors' times
are read from their processes (``/proc``) and their own clocks, the same machine's.

``--imports``: what a model actor imports (``python -X importtime -c "import
camlens.runs.actors"``, the biggest packages) and what building its session costs in a plain
process (import, the spec's model, or unpickling the driver's).

Run: ``python benchmarks/bench_ray_startup.py [--images 6] [--workers 1,2]
[--models tiny,resnet18] [--imports]`` (Linux: reads ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPECS = {
    "tiny": {"spec": "demo", "weights": None, "size": 64},  # a camlens checkpoint folder
    "resnet18": {"spec": "torchvision:resnet18", "weights": "none", "size": 64},
}
PHASES = ["ray.init", "pipeline start", "actor process", "actor imported", "actor ready",
          "first batch out", "end"]  # fmt: skip
#: The first actor's CPU seconds when it entered ``__init__`` (its imports), building its
#: session (``__init__``), its torch threads.
EXTRA = ["actor cpu s", "session cpu s", "threads"]


def boot_time() -> float:
    """Seconds since the epoch at which this machine booted."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime"):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def born(pid: int) -> float:
    """When process ``pid`` started, seconds since the epoch."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(model: str, workers: int, images: Path, out: Path) -> dict[str, float]:
    """One configuration's phases, in this (fresh) process."""
    began = time.time()
    import torch

    from camlens.runs import actors, distributed
    from camlens.runs.local import RunSettings
    from camlens.runs.session import Session

    imported = time.time()
    spec = SPECS[model]
    session = Session.from_spec(**spec, device="cpu")
    log = out.with_suffix(".jsonl")
    marks: dict[str, float] = {"driver imports": imported - began}
    marks["driver model"] = time.time() - imported

    class Timed(actors.Worker):  # pickled by value: its file travels with it
        path = str(log)

        def __init__(self, *args, **kwargs):
            entered, cpu = time.time(), cpu_seconds(os.getpid())
            super().__init__(*args, **kwargs)
            record = {
                "born": born(os.getpid()),
                "entered": entered,
                "ready": time.time(),
                "cpu": cpu,
                "build cpu": cpu_seconds(os.getpid()) - cpu,
                "threads": torch.get_num_threads(),
            }
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    start, run = distributed.start, distributed._run

    def timed_start(address=None, num_cpus=None):
        begun = time.time()
        done = start(address, num_cpus=2)
        marks["ray.init"] = time.time() - begun
        return done

    def timed_run(*args, **kwargs):
        marks["pipeline start"] = time.time()
        for block in run(*args, **kwargs):
            marks.setdefault("first batch out", time.time())
            yield block

    distributed.start, distributed._run, distributed.Worker = timed_start, timed_run, Timed
    cluster = distributed.Cluster(None, workers, cpus_per_worker=1.0 / workers)  # 1 for decoding
    settings = RunSettings(["gradcam"], batch_size=2, decoders=1)
    zero = time.time()
    summary = distributed.explain_files(
        session, spec, [images], out, settings, cluster, echo=lambda _: None
    )
    marks["end"] = time.time()
    assert summary.done == len(list(images.iterdir())), summary
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    first = min(seen, key=lambda r: r["ready"])
    marks.update({"actor process": first["born"], "actor imported": first["entered"],
                  "actor ready": first["ready"]})  # fmt: skip
    for key in ("pipeline start", "actor process", "actor imported", "actor ready",
                "first batch out", "end"):  # fmt: skip
        marks[key] -= zero
    marks["actors"] = len(seen)
    marks["actor cpu s"], marks["threads"] = first["cpu"], first["threads"]
    marks["session cpu s"] = first["build cpu"]
    return marks


def make_images(folder: Path, count: int) -> None:
    """``count`` seeded 64 px PNGs."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = generator.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def imports() -> None:
    """The biggest imports of a model actor's module, and its session's cost in a fresh
    process."""
    code = "import camlens.runs.actors"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if "." not in name.strip() or name.strip() == "camlens.runs.actors":
            rows.append((int(cumulative) / 1e6, name.strip()))
    print("\n| module (top-level) | cumulative import s |\n|---|---|")
    for seconds, name in sorted(rows, reverse=True)[:12]:
        print(f"| {name} | {seconds:.2f} |")
    session = (
        "import time, pickle; t=time.time(); import camlens.runs.actors as a; t1=time.time();"
        "from camlens.runs.session import Session; import sys, json;"
        "spec=json.loads(sys.argv[1]); s=Session.from_spec(**spec, device='cpu'); t2=time.time();"
        "data=pickle.dumps(s.model); t3=time.time(); m=pickle.loads(data); t4=time.time();"
        "Session.from_spec(**spec, device='cpu', network=m); t5=time.time();"
        'print(f\'| {spec["spec"]} | {t1-t:.2f} | {t2-t1:.2f} | {t4-t3:.3f} | {t5-t4:.2f} |'
        " {len(data)/1e6:.1f} |')"
    )
    print("\n| spec | import actors s | session from spec s | unpickle model s "
          "| session from model s | pickled MB |\n|---|---|---|---|---|---|")  # fmt: skip
    for spec in SPECS.values():
        subprocess.run([sys.executable, "-c", session, json.dumps(spec)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--models", default="tiny,resnet18")
    parser.add_argument("--imports", action="store_true", help="only the actor's imports")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, workers, images, out = args.child
        print(json.dumps(child(model, int(workers), Path(images), Path(out))))
        return
    if args.imports:
        imports()
        return
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load {load:.1f}, {args.images} 64 px images, gradcam, batch 2")
    print("\n| model | actors | driver model | " + " | ".join(PHASES + EXTRA) + " |")
    print("|---|---|---|" + "---|" * len(PHASES + EXTRA))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_images(root / "images", args.images)
        for model in args.models.split(","):
            for workers in args.workers.split(","):
                out = root / f"{model}-{workers}"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", model, workers,
                     str(root / "images"), str(out)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if done.returncode:
                    print(done.stdout, done.stderr[-3000:])
                    raise SystemExit(done.returncode)
                marks = json.loads(done.stdout.strip().splitlines()[-1])
                cells = " | ".join(f"{marks[p]:.1f}" for p in PHASES + EXTRA)
                print(f"| {model} | {workers} | {marks['driver model']:.1f} | {cells} |")
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
