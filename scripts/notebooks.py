"""Execute the tutorials' notebooks (docs/examples/*.ipynb) and store their outputs in place.

The site shows the stored outputs (mkdocs-jupyter does not execute); ``tests/docs/
test_notebooks.py`` executes every notebook in a scratch folder with :func:`execute`, so a
notebook that stops working fails the tests. Each notebook runs in its own kernel, with
``KERAS_BACKEND=tensorflow`` and this checkout's ``src`` first on the path; files it writes go to
``cwd``. Run: ``python scripts/notebooks.py [NAME...]`` (about a minute on two CPU cores).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


EAGER = """import warnings

import tensorflow as tf

tf.config.run_functions_eagerly(True)
warnings.filterwarnings("ignore", "Even though the `tf.config")"""
NOISE = ("WARNING: All log messages before absl", "I0000 ", "W0000 ", "E0000 ")


def notebooks() -> list[Path]:
    return sorted(EXAMPLES.glob("*.ipynb"))


def execute(path: Path, cwd: Path, timeout: int = 300):
    """Run every cell of the notebook at ``path`` in a fresh kernel; returns the executed
    notebook (nbclient raises ``CellExecutionError`` on the first failing cell)."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    keras = any("import keras" in cell.source for cell in book.cells)
    if keras:  # a handful of images: tracing the training step as a graph costs ten times its run
        book.cells.insert(0, nbformat.v4.new_code_cell(EAGER))
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = NotebookClient(
            book, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        )
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if keras:
        book.cells.pop(0)
    for cell in book.cells:  # TensorFlow's start-up lines, printed before its logging is set up
        cell.outputs = [o for o in cell.get("outputs", []) if not _noise(o)]
    return book


def _noise(output) -> bool:
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    lines = [line for line in output.get("text", "").splitlines() if line.strip()]
    return all(line.startswith(NOISE) for line in lines)


def main(names: list[str]) -> None:
    import nbformat

    for path in notebooks():
        if names and path.stem not in names:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            book = execute(path, Path(scratch))
        for cell in book.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(book, path)
        print(f"executed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
