"""A run owns its folder: claim, overwrite, the lock, resume checks, durability, damaged files and
kills at every write step (camlens.runs.writer, read back with camlens.load_run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import camlens
import camlens.runs.local as engine
import camlens.runs.report
import camlens.runs.writer as writer_module
from camlens.errors import CamlensError, CamlensValueError
from camlens.models.checkpoint import demo_path
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.records import RenderOptions
from camlens.runs.session import Session
from camlens.runs.writer import RunWriter, claim

SAMPLES = sorted((demo_path() / "samples").glob("*/*.png"))


@pytest.fixture(scope="module")
def demo() -> Session:
    return Session.from_spec("demo")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """8 of the bundled samples in one folder (distinct names)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in SAMPLES[:8]:
        shutil.copy(sample, folder / sample.name)
    return folder


def run(demo, inputs, out, **settings) -> engine.Summary:
    settings = {"methods": ["cam"], "batch_size": 2, **settings}
    return explain_files(demo, [inputs], out, RunSettings(**settings), echo=lambda text: None)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_that_is_not_a_run_is_refused_untouched(demo, inputs, tmp_path):
    out = tmp_path / "project"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "mine.txt").write_text("mine")
    (out / "notes.txt").write_text("notes")
    before = sorted(str(p) for p in out.rglob("*"))
    message = "is not empty and not a camlens run (it has no camlens run.json): choose an empty"
    for resume in (False, True):
        with pytest.raises(CamlensValueError, match=re.escape(message)):
            run(demo, inputs, out, resume=resume)
    with pytest.raises(CamlensValueError, match="is not empty and not a camlens run"):
        claim(out, resume=False, overwrite=True)
    assert sorted(str(p) for p in out.rglob("*")) == before


def test_a_file_or_an_unwritable_out_is_refused(demo, inputs, tmp_path, monkeypatch):
    file = tmp_path / "out.txt"
    file.write_text("x")
    with pytest.raises(CamlensValueError, match="out.txt' is a file, not a folder"):
        run(demo, inputs, file)

    def denied(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writer_module.tempfile, "mkstemp", denied)
    with pytest.raises(CamlensValueError, match=r"cannot write to '.*' \(Permission denied\)"):
        claim(tmp_path / "new" / "out", resume=False, overwrite=False)
    assert not (tmp_path / "new").exists()


def test_an_existing_run_needs_resume_or_overwrite(demo, inputs, tmp_path):
    out = tmp_path / "out"
    run(demo, inputs, out)
    before = listing(out)
    with pytest.raises(
        CamlensValueError,
        match="holds a camlens run: add --resume to continue it or --overwrite to replace it",
    ):
        run(demo, inputs, out)
    assert listing(out) == before
    with pytest.raises(CamlensValueError, match="choose one of them"):
        claim(out, resume=True, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(demo, inputs, empty, resume=True).done == 8  # resume of an empty folder: a start


def test_overwrite_removes_only_what_the_run_wrote(demo, inputs, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, files in (
        (first, sorted(inputs.iterdir())[:3]),
        (second, [*inputs.iterdir()][3:5]),
    ):
        folder.mkdir()
        for file in files:
            shutil.copy(file, folder / file.name)
    out = tmp_path / "out"
    run(demo, first, out, render=RenderOptions(panel=True, copy_images=True))
    (out / "maps" / "mine.png").write_bytes(b"user file")
    (out / "notes.txt").write_text("notes")
    (out / ".camlens-inputs").mkdir()  # a killed Ray run's spooled to-do list
    (out / ".camlens-inputs" / "inputs-000000.parquet").write_bytes(b"PAR1")
    assert len(list((out / "maps").iterdir())) == 4 and (out / "panels").is_dir()
    run(demo, second, out, overwrite=True)
    assert not (out / ".camlens-inputs").exists()
    rows = camlens.load_run(out).results
    expected = {Path(name).name for name in rows["map"]} | {"mine.png"}
    assert len(rows) == 2 and {p.name for p in (out / "maps").iterdir()} == expected
    assert (out / "notes.txt").read_text() == "notes"
    assert not (out / "panels").exists() and not (out / "images").exists()
    assert len(list((out / "overlays").iterdir())) == 2


def test_a_second_writer_is_refused_naming_the_first(demo, inputs, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from camlens.runs.writer import RunWriter
            with RunWriter({str(out)!r}, {{"methods": ["cam"]}}):
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        first = f"pid {holder.pid} on {socket.gethostname()}, started 20"
        message = f"is being written by another camlens run \\({first}"
        for attempt in (
            lambda: claim(out, resume=True, overwrite=False),
            lambda: RunWriter(out, {"methods": ["cam"]}, resume=True),
            lambda: run(demo, inputs, out, overwrite=True),
        ):
            with pytest.raises(CamlensValueError, match=message):
                attempt()
        with pytest.raises(CamlensValueError, match="wait for it to finish or choose another"):
            claim(out, resume=True, overwrite=False)
        assert len(camlens.load_run(out)) == 0  # readers do not take the lock
    finally:
        holder.communicate("")
    assert run(demo, inputs, out, resume=True).done == 8  # released when the first one ended


def test_the_lock_is_released_on_every_exit(demo, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with (
        RunWriter(out, {"methods": ["cam"]}),
        pytest.raises(CamlensValueError, match="being written by another camlens run"),
    ):
        RunWriter(out, {"methods": ["cam"]}, resume=True)
    monkeypatch.setattr(engine, "explain_batch", lambda *a, **k: (_ for _ in ()).throw(KeyError))
    with pytest.raises(KeyError):
        run(demo, inputs, out, resume=True)
    RunWriter(out, json.loads((out / "run.json").read_text()), resume=True).finish()


def test_resume_with_other_settings_is_refused(demo, inputs, tmp_path):
    out = tmp_path / "out"
    run(demo, inputs, out, methods=["cam", "gradcam"])
    before = listing(out)
    with pytest.raises(CamlensValueError) as refused:
        run(demo, inputs, out, resume=True, methods=["cam"], render=RenderOptions(alpha=0.7))
    assert str(refused.value) == (
        f"--resume: {str(out)!r} holds a run with other settings (methods: "
        '["cam", "gradcam"] -> ["cam"]; alpha: 0.5 -> 0.7): use --overwrite to replace it or '
        "another --out"
    )
    assert listing(out) == before
    assert run(demo, inputs, out, resume=True, methods=["gradcam", "cam"]).resumed == 8
    info = json.loads((out / "run.json").read_text())
    del info["precision"]  # a run written before camlens recorded a setting still resumes
    (out / "run.json").write_text(json.dumps(info))
    summary = run(demo, inputs, out, resume=True, methods=["cam", "gradcam"], precision="fp32")
    assert summary.resumed == 8


def test_parts_and_the_merged_file_are_fsynced_before_their_rename(
    demo, inputs, tmp_path, monkeypatch
):
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(handle):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{handle}")))
        fsync(handle)

    def recording_replace(source, target):
        events.append(("replace", os.fspath(source)))
        replace(source, target)
        events.append(("renamed", os.path.dirname(os.fspath(target))))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    run(demo, inputs, tmp_path / "out")
    renames = [i for i, (kind, _) in enumerate(events) if kind == "replace"]
    names = [Path(events[i][1]).name for i in renames]
    assert names.count(".results.parquet.tmp") == 1 and sum("part-" in n for n in names) == 4
    for i in renames:
        assert events[i - 1] == ("fsync", events[i][1])  # the file, then its rename,
        assert events[i + 2] == ("fsync", events[i + 1][1])  # then its folder


def test_jsonl_and_csv_hold_exactly_the_parquet_rows_after_resume(demo, inputs, tmp_path):
    (inputs / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    run(demo, inputs, out)
    run(demo, inputs, out, resume=True)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and lines == rows
    assert pd.read_csv(out / "results.csv")["path"].tolist() == [r["path"] for r in rows]


def test_a_damaged_results_file_is_named_and_resume_redoes_its_images(
    demo, inputs, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    run(demo, inputs, out)
    data = (out / "results.parquet").read_bytes()
    (out / "results.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(CamlensError, match=r"results.parquet' is damaged and cannot be read \("):
        camlens.load_run(out)
    summary = run(demo, inputs, out, resume=True)
    assert summary.done == 8 and summary.resumed == 0
    assert (out / "results.parquet.damaged").read_bytes() == data[: len(data) // 2]
    results = camlens.load_run(out).results
    assert len(results) == 8 and results["path"].is_unique


def test_a_damaged_part_or_map_is_redone_and_only_that(demo, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(RunWriter, "_finish", kill)  # killed before merging: 4 parts of 2
    with pytest.raises(Killed):
        run(demo, inputs, out)
    monkeypatch.undo()
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) == 4
    held = pq.read_table(parts[1])["path"].to_pylist()
    parts[1].write_bytes(b"PAR1 cut short")
    with pytest.raises(CamlensError, match=r"part-000001.parquet' is damaged and cannot be read"):
        camlens.load_run(out)
    maps = sorted((out / "maps").iterdir())
    rows = pq.read_table(parts[0]).to_pylist() + pq.read_table(parts[2]).to_pylist()
    truncated, missing = (out / rows[0]["map"]), (out / rows[2]["map"])
    truncated.write_bytes(truncated.read_bytes()[:-1])
    missing.unlink()
    assert len(maps) == 8
    seen = explaining(monkeypatch)
    summary = run(demo, inputs, out, resume=True)
    assert sorted(seen) == sorted(held + [rows[0]["path"], rows[2]["path"]])
    assert summary.resumed == 4 and (out / "parts" / "part-000001.parquet.damaged").is_file()
    results = camlens.load_run(out).results
    assert len(results) == 8 and results["path"].is_unique
    assert all(writer_module.complete_png(out / name) for name in results["map"])


class Killed(BaseException):
    """The process dies here."""


def kill(*args, **kwargs):
    raise Killed


def explaining(monkeypatch) -> list[str]:
    """The paths the model is asked to explain from now on."""
    real, seen = engine.explain_batch, []

    def counting(session, unit, paths, *args, **kwargs):
        seen.extend(map(str, paths))
        return real(session, unit, paths, *args, **kwargs)

    monkeypatch.setattr(engine, "explain_batch", counting)
    return seen


#: Where a run is killed: (the file a rename writes, before or after it, which such rename).
STEPS = {
    "part written": ("part-000002.parquet", "before", 1),
    "part renamed": ("part-000002.parquet", "after", 1),
    "merged written": ("results.parquet", "before", 1),
    "merged renamed": ("results.parquet", "after", 1),
    "jsonl written": ("results.jsonl", "after", 1),
    "csv written": ("results.csv", "after", 1),
    "report written": ("report.html", "after", 1),
    "manifest written": ("run.json", "after", 2),
}


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_write_step_resumes_to_every_image_once(
    demo, inputs, tmp_path, monkeypatch, step
):
    name, when, which = STEPS[step]
    replace, write_report, renames, dead = os.replace, camlens.runs.report.write_report, [], []

    def dying(source, target):
        if dead:
            raise Killed  # a dead process writes nothing more
        renames.append(Path(target).name)
        if when == "before" and renames.count(name) == which:
            dead.append(step)
            raise Killed
        replace(source, target)
        if when == "after" and renames.count(name) == which:
            dead.append(step)
            raise Killed

    def report(out, *args, **kwargs):
        if dead:
            raise Killed
        path = write_report(out, *args, **kwargs)
        if name == "report.html":
            dead.append(step)
            raise Killed
        return path

    monkeypatch.setattr(os, "replace", dying)
    monkeypatch.setattr(camlens.runs.report, "write_report", report)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run(demo, inputs, out, methods=["cam", "gradcam"])
    monkeypatch.undo()
    assert dead == [step]
    summary = run(demo, inputs, out, resume=True, methods=["cam", "gradcam"])
    assert summary.done + summary.resumed == 8
    finished = camlens.load_run(out)
    results = finished.results
    assert finished.complete and len(results) == 16 and not finished.failures.size
    assert not results.duplicated(["path", "method"]).any() and results["path"].nunique() == 8
    rows = pq.read_table(out / "results.parquet").to_pylist()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert lines == rows and len(pd.read_csv(out / "results.csv")) == 16


def test_a_run_written_before_this_change_is_read_and_resumed(demo, inputs, tmp_path):
    """Old runs: results.jsonl appended per batch (a failure row repeated by each resume), no
    lock file, no seed or weights hash in run.json."""
    (inputs / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    run(demo, inputs, out)
    (out / ".camlens.lock").unlink()
    rows = pq.read_table(out / "results.parquet").to_pylist()
    failure = json.dumps(next(r for r in rows if r["error"])) + "\n"
    (out / "results.jsonl").write_text(failure + "".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((out / "run.json").read_text())
    info = {k: v for k, v in info.items() if k not in ("seed", "weights_sha256")}
    (out / "run.json").write_text(json.dumps(info))
    old = camlens.load_run(out)
    assert len(old) == 8 and old.failures["path"].tolist() == [str(inputs / "broken.png")]
    assert run(demo, inputs, out, resume=True).resumed == 8
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert lines == pq.read_table(out / "results.parquet").to_pylist() and len(lines) == 9


def test_a_segmentation_run_resumes_through_the_same_checks(inputs, tmp_path):
    from camlens.runs.tasks import TaskSettings, explain_task_files

    session = Session.from_spec("task_models:segmenter", size=64)
    files, out = sorted(inputs.iterdir())[:2], tmp_path / "out"

    def segment(**settings) -> list[str]:
        said: list[str] = []
        explain_task_files(
            session, files, out, RunSettings(["gradcam"], **settings), TaskSettings("segment"),
            echo=said.append,
        )  # fmt: skip
        return said

    segment()
    with pytest.raises(CamlensValueError, match="holds a camlens run: add --resume"):
        segment()
    with pytest.raises(CamlensValueError, match=r"other settings \(alpha: 0.5 -> 0.7\)"):
        segment(resume=True, render=RenderOptions(alpha=0.7))
    assert segment(resume=True) == [f"resume: 2 image(s) already in {out}, 0 to do"]


def test_a_damaged_manifest_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"format": "camlens-run", "vers')
    with pytest.raises(CamlensError, match=r"run.json' is damaged and cannot be read \("):
        camlens.load_run(tmp_path)
