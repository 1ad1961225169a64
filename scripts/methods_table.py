"""Rank every registered method on the demo model: ``camlens evaluate`` over all methods on the
bundled samples, its ``metrics.csv`` written as a Markdown table between the markers of
docs/methods.md.

Deletion and insertion are the areas under the curves of the target's probability as the most
salient pixels are removed or added (lower deletion, higher insertion: more faithful); Average
Drop and Increase in Confidence compare the probability on the image masked by the map with the
plain image's; with the samples' boxes, the localisation metrics. ``camlens evaluate`` ranks by
insertion - deletion. Nothing is downloaded. Run: ``python scripts/methods_table.py
[--steps 50]`` (every method: a few minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "methods.md"
START = "<!-- methods-table:start -->"
END = "<!-- methods-table:end -->"
#: metrics.csv columns not shown as numbers
HIDDEN = ("rank", "method", "images", "error")


def evaluate(out: Path, steps: int, methods: str = "all") -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` from ``camlens evaluate --model demo --method METHODS``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "camlens", "evaluate", "--model", "demo", "--out", str(out)]
    command += ["--method", methods, "--steps", str(steps)]
    subprocess.run(command, check=True, env=env)
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def table(rows: list[dict[str, str]], steps: int, methods: str = "all") -> str:
    """The Markdown table of the rows, in rank order, numbers to 3 decimals."""
    columns = [c for c in rows[0] if c not in HIDDEN] if rows else []
    lines = [
        f"`camlens evaluate --model demo --method {methods} --steps {steps}` on the "
        f"{rows[0]['images'] if rows else 0} bundled samples, ranked by insertion - deletion "
        "(rendered by `python scripts/methods_table.py`):",
        "",
        "| rank | method | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---:|---|" + "---:|" * len(columns),
    ]
    for row in sorted(rows, key=lambda r: int(r["rank"] or 10**6)):
        cells = [f"{float(row[c]):.3f}" if row[c] else "" for c in columns]
        error = f" ({row['error']})" if row.get("error") else ""
        lines.append(f"| {row['rank']} | `{row['method']}`{error} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def between_markers(text: str, block: str) -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{PAGE.name} needs one {START} line before one {END} line")
    head, rest = text.split(START)
    return f"{head}{START}\n{block}\n{END}{rest.split(END)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps")
    parser.add_argument("--method", default="all", help="comma-separated (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = evaluate(Path(folder), args.steps, args.method)
    PAGE.write_text(between_markers(PAGE.read_text(), table(rows, args.steps, args.method)))
    print(f"{len(rows)} methods -> {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
