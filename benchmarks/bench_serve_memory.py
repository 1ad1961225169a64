"""``camlens serve``'s memory under large uploads: 8 concurrent 39-Mpx 16-bit PNGs.

Starts ``camlens serve`` (the demo model) as its own process on 127.0.0.1, sends one small
explain to warm it up, then POSTs 8 copies of one 7216 x 5412 16-bit grayscale PNG (a gradient:
about 80 KB of file, 39 megapixels) to ``/api/explain`` at once, sampling the server's resident
memory (``/proc/PID/status``) every 10 ms. It prints the resident memory before, its peak rise
while the uploads are decoded and explained, and the rise left 3 s and 15 s after the last answer.
Target (issue 19): peak rise at most 1.5 GiB, back near the start afterwards.

Measured on 2 shared, loaded CPU cores: RSS 664 MiB before; with the 16-bit decode through
float64 copies, peak rise 1,914 MiB (2 decodes of ~0.95 GiB at once; 6 of 8 answered 503 after
the 20 s decode limit), 0 MiB left 3 s after; with an integer 16-bit decode, peak rise 610 MiB,
8 of 8 answered in 19.5 s, +1 MiB left. After merging the one decode (``read_image``):
peak rise 562 MiB, 8 of 8 answered in 12.1 s, +1 MiB left 3 s and 15 s after.

Run: ``python benchmarks/bench_serve_memory.py [--uploads 8] [--src DIR]`` (``--src``: the
``src`` folder of another camlens checkout, to compare with it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
WIDTH, HEIGHT = 7216, 5412


def sixteen_bit_png() -> bytes:
    """A 16-bit grayscale gradient, 39 megapixels, that compresses to tens of kilobytes."""
    row = np.linspace(0, 65535, WIDTH).astype(np.uint16)
    image = Image.fromarray(np.broadcast_to(row, (HEIGHT, WIDTH)).copy())
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """The highest resident memory of ``pid`` seen since it started, every 10 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)


def start_server(src: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(src)}
    server = subprocess.Popen(
        [sys.executable, "-m", "camlens", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/api/health", timeout=1)
            return server, url
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("camlens serve did not start")


async def post_all(url: str, data: bytes, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        answers = await asyncio.gather(
            *(
                client.post("/api/explain", files={"image": (f"{i}.png", data)})
                for i in range(count)
            )
        )
    return [answer.status_code for answer in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--src", type=Path, default=SRC)
    args = parser.parse_args()
    data = sixteen_bit_png()
    print(f"upload: {WIDTH} x {HEIGHT} 16-bit PNG, {len(data) / 1024:.0f} KiB, x{args.uploads}")
    server, url = start_server(args.src)
    try:
        warm = np.zeros((64, 64, 3), np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(warm).save(buffer, "PNG")
        httpx.post(f"{url}/api/explain", files={"image": ("w.png", buffer.getvalue())}, timeout=60)
        time.sleep(1)
        before = rss_mib(server.pid)
        sampler = Sampler(server.pid)
        sampler.start()
        started = time.perf_counter()
        codes = asyncio.run(post_all(url, data, args.uploads))
        seconds = time.perf_counter() - started
        time.sleep(3)
        after = rss_mib(server.pid)
        time.sleep(12)  # decodes that ran past the time limit finish in their threads
        sampler.done.set()
        sampler.join()
        later = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"answers: {codes} in {seconds:.1f} s")
    print(f"RSS before: {before:.0f} MiB")
    print(f"peak rise:  {sampler.peak - before:.0f} MiB (target <= 1536)")
    rise, left = after - before, later - before
    print(f"rise after: {rise:.0f} MiB 3 s after the last answer, {left:.0f} MiB 15 s after")


if __name__ == "__main__":
    main()
