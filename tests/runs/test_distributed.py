"""The Ray engine on a three-node cluster simulated on this machine (``conftest.cluster``): it
equals the local engine with every file written by the actors, survives a killed actor, resumes,
and checks its usage before any work."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import torch
from needs import need
from PIL import Image
from typer.testing import CliRunner

import camlens
from camlens.cli import app
from camlens.images.decode import Failure
from camlens.models.checkpoint import checkpoint_folder, demo_path
from camlens.runs import actors, distributed, objects, spool
from camlens.runs.actors import Delivered, decode_rows
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.records import RenderOptions
from camlens.runs.session import Session
from camlens.runs.store import Store, run_folder

pytestmark = pytest.mark.timeout(240)  # a hung cluster fails the test instead of CI

SAMPLES = demo_path() / "samples"
TIMING = ["load_s", "explain_s", "render_s"]
runner = CliRunner()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The local engine on the 16 bundled samples (boxes.csv is ignored), Grad-CAM + CAM,
    with the CAM paper's boxes."""
    out = tmp_path_factory.mktemp("local")
    settings = RunSettings(
        ["gradcam", "cam"], batch_size=5, labels_from_folders=True, render=RenderOptions(boxes=True)
    )
    explain_files(Session.from_spec("demo"), [str(SAMPLES)], out, settings, echo=print)
    return out


def _sorted(run) -> pd.DataFrame:
    rows = run.results.drop(columns=TIMING).sort_values(["path", "method"])
    return rows.reset_index(drop=True)


def test_ray_run_equals_local_run(cluster, local_run, tmp_path):
    summary = distributed.explain(
        SAMPLES,
        model="demo",
        methods="gradcam,cam",
        out=tmp_path,
        batch_size=5,
        labels_from_folders=True,
        render=RenderOptions(boxes=True),
        workers=2,
    )
    assert (summary.done, summary.exit_code, summary.failures, summary.ignored) == (16, 0, [], 1)
    # the actors wrote every file and part; the driver received their rows' keys, no images
    traffic = summary.engine
    writers = [int(who.rsplit(":", 1)[1]) for who in traffic["writers"]]
    assert sum(traffic["writers"].values()) == traffic["images"] == 16
    assert os.getpid() not in writers and not set(writers) & set(traffic["decoders"])
    assert traffic["decoders"] and os.getpid() not in traffic["decoders"]
    assert 0 < traffic["bytes"] / 16 <= 2048
    ray_run, local = camlens.load_run(tmp_path), camlens.load_run(local_run)
    assert len(ray_run) == 32 and ray_run.complete
    assert all(len(boxes) == 1 for boxes in ray_run.results["boxes"])
    pd.testing.assert_frame_equal(_sorted(ray_run), _sorted(local))
    pd.testing.assert_frame_equal(ray_run.failures, local.failures)
    for name in ray_run.results["map"]:
        assert (tmp_path / name).read_bytes() == (local_run / name).read_bytes(), name
    for name in ray_run.results["overlay"]:
        with Image.open(tmp_path / name) as a, Image.open(local_run / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
    info = {k: v for k, v in ray_run.info.items() if k not in ("created", "finished")}
    expected = {k: v for k, v in local.info.items() if k not in ("created", "finished")}
    assert info == dict(expected, engine="ray")
    # the explorer (camlens serve --run) sees the same run
    from camlens.serve.runs import Runs

    ours, theirs = Runs([tmp_path, local_run]).summary(0), Runs([local_run]).summary(0)
    for summary in (ours, theirs):
        del summary["info"], summary["name"]
    assert ours == theirs and ours["images"] == 16


def test_killed_actor_is_retried_and_nothing_is_lost_or_twice(cluster, tmp_path):
    files = sorted(SAMPLES.glob("*/*.png"))
    dataset = need("ray").data.from_items([{"path": str(f)} for f in files])
    summary = distributed.explain(
        dataset, model="ray_models:killer", methods=["gradcam", "cam"], out=tmp_path,
        size=64, batch_size=4, workers=1,
    )  # fmt: skip
    assert cluster.marker.is_file(), "the actor was never killed"
    killed = int(cluster.marker.read_text())
    assert killed != os.getpid()
    assert (summary.done, summary.exit_code, summary.failures) == (16, 0, [])
    rows = camlens.load_run(tmp_path).results
    assert len(rows) == 32 and rows["error"].isna().all()
    assert (rows.groupby(["path", "method"]).size() == 1).all()
    assert set(rows["path"]) == {str(f) for f in files}
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 32  # the retried batch was written once


def test_a_batch_the_model_raises_for_is_a_failure_row_with_its_error_and_traceback(
    cluster, tmp_path
):
    """As the local engine: the reason keeps the error's type, the driver logs the traceback."""
    from toy_models import SHAPE_ERROR

    for name, value in (("bright", 230), ("dark", 10)):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(tmp_path / f"{name}.png")
    dataset = need("ray").data.from_items(
        [{"path": str(tmp_path / f"{n}.png")} for n in ("bright", "dark")]
    )
    out = tmp_path / "out"
    summary = distributed.explain(
        dataset, model="ray_models:fails_for_bright", methods=["gradcam"], out=out, size=64,
        batch_size=1, workers=1,
    )  # fmt: skip
    reason = f"explaining failed: RuntimeError: {SHAPE_ERROR}"
    assert summary.done == 1 and [f.reason for f in summary.failures] == [reason]
    assert list(camlens.load_run(out).failures["error"]) == [reason]
    log = (out / "camlens.log").read_text()
    assert f"{tmp_path / 'bright.png'}\nTraceback (most recent call last)" in log
    assert f"raise RuntimeError(SHAPE_ERROR)\nRuntimeError: {SHAPE_ERROR}" in log


def test_actors_explain_the_drivers_random_weights():
    """Random weights come from the spec's seed: every actor builds the driver's network."""
    spec = {"spec": "ray_models:killer", "weights": None, "size": 64, "seed": 0}
    driver = Session.from_spec(**spec)
    torch.manual_seed(123)  # whatever the actor's own random state
    worker = distributed.Worker(spec, RunSettings(["cam"]), Store("/nowhere"))
    theirs, ours = worker.session.model.state_dict(), driver.model.state_dict()
    assert list(theirs) == list(ours) == ["features.0.weight", "features.0.bias", "fc.weight",
                                          "fc.bias"]  # fmt: skip
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_actors_build_their_session_around_the_shipped_model_not_the_spec(cluster):
    """The driver's model travels once through Ray's object store; a Worker given its reference
    never loads the spec (here one that names nothing). What Ray cannot pickle (a module holding
    a lock) or is no torch module is not shipped: the actors load the spec."""
    import ray_models

    model = ray_models.killer()
    worker = distributed.Worker({"spec": "nowhere:gone", "size": 64}, RunSettings(["cam"]),
                                Store("/nowhere"), model=actors.ship(model))  # fmt: skip
    theirs, ours = worker.session.model.state_dict(), model.state_dict()
    assert worker.session.model is not model and list(theirs) == list(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert (worker.session.classes, worker.session.size) == (10, 64)
    locked = torch.nn.Linear(2, 2)
    locked.lock = threading.Lock()
    assert actors.ship(locked) is None and actors.ship(object()) is None


class Stop(Exception):
    """Stands for a kill of the driver in the middle of a run."""


def test_an_interrupted_run_on_the_cluster_resumes_with_every_row_once(cluster, tmp_path):
    """The driver stops after its first batch (``--out`` a ``file://`` URI): the parts the actors
    wrote are kept (however many batches they finished meanwhile), and the resumed run, given
    two more images, does the rest, every row once."""
    files = sorted(SAMPLES.glob("*/*.png"))[:8]
    session, settings = Session.from_spec("demo"), RunSettings(["cam"], batch_size=2, decoders=1)
    out = f"file://{tmp_path / 'out'}"

    def stop(handled: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        distributed.explain_files(session, {"spec": "demo"}, files[:6], out, settings,
                                  distributed.Cluster(), advance=stop)  # fmt: skip
    first = camlens.load_run(tmp_path / "out")
    assert not first.complete and 2 <= len(first) <= 6
    settings.resume = True
    summary = distributed.explain_files(session, {"spec": "demo"}, files, out, settings,
                                        distributed.Cluster())  # fmt: skip
    assert summary.resumed == len(first) and summary.done == 8 - len(first)
    run = camlens.load_run(tmp_path / "out")
    assert run.complete and sorted(run.results["path"]) == [str(f) for f in files]
    assert len((tmp_path / "out/results.jsonl").read_text().splitlines()) == 8
    assert not (tmp_path / "out/parts").exists()


def test_cli_resumes_a_local_run_and_exits_as_the_local_engine(cluster, tmp_path):
    out = tmp_path / "out"
    first = explain_files(Session.from_spec("demo"), [str(SAMPLES / "[0-4]" / "*.png")], out,
                          RunSettings(["cam"]), echo=print)  # fmt: skip
    assert (first.done, first.exit_code) == (7, 0)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = ["explain", str(SAMPLES / "*" / "*.png"), str(empty), "--model", "demo"]
    args += ["--method", "cam", "--out", str(out), "--engine", "ray", "--resume", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "9 image(s) explained with cam" in result.output and "7 already done" in result.output
    assert f"{empty}: empty file (0 bytes)" in result.output
    run = camlens.load_run(out)
    assert len(run) == 16 and run.results["path"].is_unique and run.info["engine"] == "ray"
    assert list(run.failures["path"]) == [str(empty)]
    manifest = json.loads((out / "run.json").read_text())
    assert (manifest["images"], manifest["rows"], manifest["failures"]) == (16, 16, 1)


def test_ray_names_that_sanitise_alike_and_a_non_utf8_name(cluster, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    sample = next(SAMPLES.glob("*/*.png"))
    for name in [b"a b.png", b"a_b.png", b"caf\xe9.png"]:
        shutil.copy(sample, os.path.join(os.fsencode(folder), name))
    out = tmp_path / "out"
    args = ["explain", str(folder), "--model", "demo", "--method", "cam", "--out", str(out)]
    result = runner.invoke(app, [*args, "--engine", "ray", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = camlens.load_run(out).results
    assert len(rows) == 3 and rows["map"].is_unique
    assert str(folder / "caf\\xe9.png") in set(rows["path"])
    again = runner.invoke(app, [*args, "--engine", "ray", "--quiet", "--resume"])
    assert again.exit_code == 0 and "3 already done" in again.output, again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engine", "spark"], "--engine must be local or ray, got 'spark'"),
        (["--workers", "2"], "--address, --workers and --gpus-per-worker need --engine ray"),
        (["--engine", "ray", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--engine", "ray", "--decoders", "0"], "--decoders must be at least 1, got 0"),
        (
            ["--engine", "ray", "--gpus-per-worker", "-1"],
            "--gpus-per-worker must be 0 (CPU actors) or more, got -1",
        ),
        (
            ["--engine", "ray", "--address", "nowhere"],
            "--address must be auto, ray://HOST:PORT or HOST:PORT, got 'nowhere'",
        ),
        (
            ["--engine", "ray", "--gpus-per-worker", "1"],
            "--gpus-per-worker 1 asks for GPUs, but this machine has none; pass --address of "
            "a cluster with GPUs, or --gpus-per-worker 0",
        ),
    ],
)
def test_usage_is_checked_before_any_work(extra, message, tmp_path):
    if "ray" in extra:
        need("ray")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(SAMPLES), "--model", "demo", "--out", str(out)]
                           + extra)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output
    assert not out.exists()


def test_a_pool_the_cluster_cannot_place_is_refused(cluster, tmp_path):
    with pytest.raises(camlens.CamlensError, match=r"^a worker needs 4 CPU\(s\) and a decoding "
                       r"task 1: the Ray cluster has 3$"):  # fmt: skip
        distributed.explain_files(
            Session.from_spec("demo"), {"spec": "demo"}, [SAMPLES], tmp_path / "out",
            RunSettings(["cam"]), distributed.Cluster(cpus_per_worker=4.0),
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_object_storage_uris(tmp_path):
    """file:// URIs go through pyarrow's file systems as s3:// and gs:// do: listing, globs,
    class folders, decoding in the worker with the local engine's failure reasons."""
    for name in ("cats/a.png", "cats/b.png", "dogs/c.png", "dogs/.hidden.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(SAMPLES / "0" / "00000.png", tmp_path / name)
    (tmp_path / "dogs" / "bad.png").write_bytes(b"not a png")
    root = f"file://{tmp_path}"
    files, failures, classes = distributed.list_uris(
        [root, f"{root}/cats/*.png", f"{root}/none/*.png", f"{root}/missing.png"]
    )
    assert files == [f"{root}/cats/a.png", f"{root}/cats/b.png", f"{root}/dogs/bad.png",
                     f"{root}/dogs/c.png"]  # fmt: skip
    assert failures == [
        Failure(f"{root}/none/*.png", "no file matches this pattern"),
        Failure(f"{root}/missing.png", "no such file or folder"),
    ]
    assert classes == {f"{root}/cats/a.png": "cats", f"{root}/cats/b.png": "cats",
                       f"{root}/dogs/bad.png": "dogs", f"{root}/dogs/c.png": "dogs"}  # fmt: skip
    # the actors' two stages, here in this process: decoding, then explaining and writing into a
    # pyarrow file system (a SubTreeFileSystem stands in for s3://bucket/prefix)
    from pyarrow import fs

    (tmp_path / "out").mkdir()
    store = Store("", fs.SubTreeFileSystem(str(tmp_path / "out"), fs.LocalFileSystem()))
    settings = RunSettings(["cam"], render=RenderOptions(copy_images=True))
    worker = distributed.Worker({"spec": "demo"}, settings, store, run=3)
    batch = {
        "index": np.array([7, 8]),
        "path": np.array([f"{root}/dogs/bad.png", f"{root}/cats/a.png"]),
        "stem": np.array(["bad", "a"]),
        "true_name": np.array(["dogs", "cats"]),
        "true_label": np.array([-1, -1]),
    }
    decoded = decode_rows(batch, worker.session.size)
    assert decoded["error"] == ["not an image (Pillow cannot identify its format)", ""]
    [data] = worker(decoded)["delivered"]
    assert len(data) < 1024  # no image bytes for the driver
    delivered = pickle.loads(data)
    assert delivered.done == [(f"{root}/cats/a.png", "cam")] and delivered.pid == os.getpid()
    assert delivered.failures == [
        Failure(f"{root}/dogs/bad.png", "not an image (Pillow cannot identify its format)")
    ]
    assert delivered.part.startswith("part-000003-0000000007-")
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "a.png", "a_cam.jpg", "a_cam.png", delivered.part]  # fmt: skip
    assert (tmp_path / "out/images/a.png").read_bytes() == (SAMPLES / "0/00000.png").read_bytes()
    rows = pd.read_parquet(tmp_path / "out/parts" / delivered.part)
    assert list(rows["path"]) == [f"{root}/cats/a.png", f"{root}/dogs/bad.png"]
    assert list(rows["true_name"].fillna("-")) == ["cats", "-"]
    assert objects.names([Path("/x/a.png"), distributed.ObjectPath("s3://b/a.png")]) == {
        "/x/a.png": "x__a.png",
        "s3://b/a.png": "b__a.png",
    }


def test_the_run_folder_of_a_file_uri_and_of_an_object_store(tmp_path):
    assert run_folder(f"file://{tmp_path}/out") == tmp_path / "out"
    assert run_folder(Path(f"file://{tmp_path}/out")) == tmp_path / "out"  # file:/... as a Path
    assert run_folder("runs/out") == Path("runs/out")
    # an object store's prefix stays a URI (camlens.runs.remote writes it), also through a Path
    assert run_folder("s3://bucket/runs") == "s3://bucket/runs"
    assert run_folder(Path("gs://bucket/runs")) == "gs://bucket/runs"
    with pytest.raises(camlens.CamlensValueError, match=r"^--out 'nope://bucket/runs': pyarrow "):
        Store.at("nope://bucket/runs")


def test_without_an_address_ray_starts_its_own_even_beside_a_running_cluster(monkeypatch):
    """``address=None`` starts a Ray of its own (``"local"``): Ray's default would join another
    cluster running on this machine and then refuse ``num_cpus``."""
    ray = need("ray")
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **options: calls.append(
        (address, os.environ.get("PYTHONPATH"), "runtime_env" in options)))  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    assert distributed.start(num_cpus=1) and distributed.start("auto")
    # a local Ray's processes inherit this camlens's folder first (no runtime_env: the workers
    # Ray starts ahead serve the run); this process's environment is left as it was
    src = str(Path(distributed.__file__).resolve().parents[2])
    assert calls == [("local", f"{src}{os.pathsep}elsewhere", False), ("auto", "elsewhere", False)]
    assert os.environ["PYTHONPATH"] == "elsewhere"


def test_a_batch_delivered_twice_is_kept_once(tmp_path):
    """A retried batch arrives again: its rows and failures are counted once."""
    engine = distributed.RayEngine({}, distributed.Cluster())
    writer = SimpleNamespace(done={("b.png", "cam"), ("c.png", "")})
    job = cast(Any, SimpleNamespace(out=tmp_path, writer=writer))
    failures = [Failure("c.png", "empty file (0 bytes)"), Failure("d.png", "empty file (0 bytes)")]
    delivered = Delivered([("a.png", "cam"), ("b.png", "cam")], failures, host="h", pid=1)
    first = engine._outcome(delivered, job)
    assert (first.done, first.handled, first.failures, first.stored) == (1, 2, failures[1:], True)
    again = engine._outcome(delivered, job)
    assert (again.done, again.handled, again.failures) == (0, 0, [])
    assert engine.traffic["writers"] == {"h:1": 1} and engine.traffic["images"] == 1


def test_the_core_package_does_not_import_ray_nor_actors_what_they_do_not_use():
    """The model actors' module imports neither Ray nor the command line's, the server's or the
    figures' packages (each actor process pays for every import); the core package no Ray."""
    heavy = ["ray", "matplotlib", "pandas", "fastapi", "typer", "rich", "scipy", "sklearn"]
    code = (
        f"import sys, camlens.runs.actors; print([m for m in {heavy} if m in sys.modules]);"
        "import camlens, camlens.runs.distributed, camlens.cli; print('ray' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(camlens.__file__).parents[1]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.split() == ["[]", "False"]


def test_a_run_past_one_chunk_streams_its_inputs_and_resumes(
    cluster, local_run, tmp_path, monkeypatch
):
    """With chunks of 5 inputs, the 16 samples are spooled in 4 chunks that Ray's tasks read;
    each image is named from its own path, and a resumed run finds every image done. The
    actors explain with the driver's model, shipped through Ray's object store: its checkpoint
    folder is gone once the driver has loaded it, and the maps are the local run's."""
    from camlens.runs import listing

    monkeypatch.setattr(listing, "CHUNK", 5)
    folder = Path(shutil.copytree(checkpoint_folder("demo"), tmp_path / "model"))
    session, settings = Session.from_spec(str(folder)), RunSettings(["cam"], batch_size=4,
                                                                     decoders=1)  # fmt: skip
    shutil.rmtree(folder)
    out, spec = tmp_path / "out", {"spec": str(folder)}
    summary = distributed.explain_files(session, spec, [SAMPLES], out, settings,
                                        distributed.Cluster())  # fmt: skip
    assert (summary.done, summary.ignored, summary.failures) == (16, 1, [])
    rows = camlens.load_run(out).results
    stems = {listing.stream_name(p): p for p in rows["path"]}
    assert sorted(rows["stem"]) == sorted(stems) and len(stems) == 16
    assert all((out / name).is_file() for name in [*rows["map"], *rows["overlay"]])
    local = camlens.load_run(local_run).results.set_index(["path", "method"])["map"]
    for path, name in zip(rows["path"], rows["map"]):
        with Image.open(out / name) as ours, Image.open(local_run / local[path, "cam"]) as theirs:
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), path
    assert not (out / spool.SPOOL).exists()
    settings.resume = True
    said: list[str] = []
    again = distributed.explain_files(session, spec, [SAMPLES], out, settings,
                                      distributed.Cluster(), echo=said.append)  # fmt: skip
    assert (again.done, again.resumed) == (0, 16)
    assert f"resume: 16 image(s) already in {out}, 0 to do" in said
