"""camlens.runs.pipeline: the run loop every engine plugs into (issue 20: one pipeline). A toy
engine stands in for the local, tasks and Ray engines: the messages, failure rows, progress,
lock, resume and finished manifest are the pipeline's, whichever engine supplies the batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import camlens
from camlens.images.decode import Failure
from camlens.runs import distributed, local, tasks
from camlens.runs.pipeline import Hooks, Inputs, Job, Outcome, RunSettings, nothing, run
from camlens.runs.records import Record, map_png
from camlens.runs.row import Row
from camlens.runs.session import Session
from camlens.runs.writer import RunWriter

FILES = [Path("/in/a.png"), Path("/in/b.png"), Path("/in/c.png")]


class Toy:
    """Explains every file but ``c.png`` (its batch fails); ``stop`` raises after one batch."""

    name = "toy"
    started = staticmethod(nothing)

    def __init__(self, stop: bool = False) -> None:
        self.stop, self.seen = stop, []

    def inputs(self, paths, out, labels) -> Inputs:
        return Inputs(list(FILES), [Failure("/in/gone.png", "no such file or folder")], 1)

    def batches(self, job: Job) -> Iterator[Outcome]:
        for path in job.todo:
            self.seen.append(path.name)
            if path.name == "c.png":
                yield Outcome(list, [Failure(str(path), "explaining failed: boom")], 0, 1)
            else:
                yield Outcome(lambda p=path: [_record(p)], [], 1, 1)
            if self.stop:
                raise KeyboardInterrupt


def _record(path: Path) -> Record:
    row = Row(path=str(path), stem=path.stem, method="cam", map=f"maps/{path.stem}_cam.png")
    return Record(row.as_dict(), {f"maps/{path.stem}_cam.png": map_png(np.zeros((4, 4)))})


@pytest.fixture(scope="module")
def demo() -> Session:
    return Session.from_spec("demo")


def _run(demo, out, engine, **settings):
    said, steps = [], []
    hooks = Hooks(said.append, steps.append, lambda n: said.append(f"total {n}"), "toy")
    summary = run(engine, demo, ["/in"], out, RunSettings(["cam"], **settings), {"x": 1}, hooks)
    return summary, said, steps


def test_a_run_says_counts_writes_failure_rows_and_finishes(demo, tmp_path):
    summary, said, steps = _run(demo, tmp_path, Toy())
    assert said == [
        "failed: /in/gone.png: no such file or folder",
        "1 non-image file(s) ignored",
        "total 3",
        "failed: /in/c.png: explaining failed: boom",
    ]
    assert (summary.done, summary.ignored, summary.exit_code, steps) == (2, 1, 1, [1, 1, 1])
    found = camlens.load_run(tmp_path)
    assert found.complete and found.info["x"] == 1 and found.info["failures"] == 2
    assert found.results["path"].tolist() == ["/in/a.png", "/in/b.png"]
    assert sorted(found.failures["path"]) == ["/in/c.png", "/in/gone.png"]


def test_resume_is_said_and_skips_what_is_done(demo, tmp_path):
    _run(demo, tmp_path, Toy())
    engine = Toy()
    summary, said, _ = _run(demo, tmp_path, engine, resume=True)
    assert f"resume: 2 image(s) already in {tmp_path}, 1 to do" in said
    assert (summary.resumed, engine.seen) == (2, ["c.png"])


def test_an_interrupted_run_is_finished_unfinished_and_its_lock_released(demo, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(demo, tmp_path, Toy(stop=True))
    found = camlens.load_run(tmp_path)
    assert not found.complete and found.results["path"].tolist() == ["/in/a.png"]
    RunWriter(tmp_path, {"x": 1}, resume=True).close()  # nobody holds the folder


def test_the_three_engines_supply_the_same_parts():
    engines = [local.LocalEngine, tasks.TaskEngine, distributed.RayEngine]
    for engine in engines:
        assert all(callable(getattr(engine, part)) for part in ("inputs", "started", "batches"))
    assert [e.name for e in engines] == ["local", "local", "ray"]
