"""A run folder in an object store (``--out s3://bucket/prefix``, :mod:`camlens.runs.remote`),
against a real S3 protocol: moto's server on this machine, reached by pyarrow's S3 file system
with the credentials in the URI (so the Ray actors, on the simulated cluster of
``conftest.cluster``, get them with the pickled store)."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from needs import need
from typer.testing import CliRunner

import camlens
from camlens.cli import app
from camlens.models.checkpoint import demo_path
from camlens.runs import distributed, remote, spool
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.session import Session
from camlens.runs.store import Store

pytestmark = pytest.mark.timeout(240)

FILES = sorted((demo_path() / "samples").glob("*/*.png"))[:4]  # 64x64
TIMING = ["load_s", "explain_s", "render_s"]
runner = CliRunner()


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server with the bucket ``bucket``; ``s3(prefix)`` is a prefix's URI, credentials
    and endpoint in it."""
    server = need("moto.server").ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    from pyarrow import fs

    fs.S3FileSystem(access_key="x", secret_key="y", endpoint_override=f"{host}:{port}",
                    scheme="http", region="us-east-1", allow_bucket_creation=True,
                    ).create_dir("bucket")  # fmt: skip
    yield lambda prefix: f"s3://x:y@bucket/{prefix}?{query}"
    server.stop()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The driver's staging folders in this test's own cache; no wait to confirm a lease (one
    run at a time here)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(remote, "SETTLE_S", 0.0)


@pytest.fixture(scope="module")
def demo():
    return Session.from_spec("demo")


def names(uri: str) -> list[str]:
    """Every object below the prefix ``uri``, sorted (folder markers left out)."""
    from pyarrow import fs

    store = Store.at(uri)
    listed = store.system.get_file_info(fs.FileSelector(store.root, recursive=True))
    return sorted(i.path[len(store.root) + 1 :] for i in listed if i.type == fs.FileType.File)


def _rows(run) -> pd.DataFrame:
    return run.results.drop(columns=TIMING).sort_values(["path", "method"]).reset_index(drop=True)


class Stop(Exception):
    """Stands for a kill of the driver in the middle of a run."""


def test_a_ray_run_into_s3_resumes_every_row_once_and_equals_the_local_run(
    cluster, s3, demo, tmp_path
):
    """A run stopped after its first batch keeps what it stored and gives its lease back; the
    Ray run resuming it explains only the rest. The run equals the local engine's in a folder,
    its files written by the actors, nothing left in the prefix but the run's own objects."""
    settings = RunSettings(["cam"], batch_size=1, decoders=1)
    explain_files(demo, FILES, tmp_path / "local", settings, echo=print)
    out = s3("ray")

    def stop(handled: int) -> None:
        raise Stop

    with pytest.raises(Stop):  # the driver killed (the local engine: one Ray run is enough)
        explain_files(demo, FILES[:3], out, settings, echo=print, advance=stop)
    first = camlens.load_run(out)
    assert not first.complete and 1 <= len(first) <= 3
    assert ".camlens.lock" not in names(out)
    settings.resume = True
    summary = distributed.explain_files(demo, {"spec": "demo"}, FILES, out, settings,
                                        distributed.Cluster())  # fmt: skip
    assert (summary.resumed, summary.done) == (len(first), 4 - len(first))
    assert (summary.exit_code, summary.failures) == (0, [])
    writers = summary.engine["writers"]  # the actors wrote the files and parts, not the driver
    assert sum(writers.values()) == 4 - len(first)
    assert not any(w.endswith(f":{os.getpid()}") for w in writers)
    assert 0 < summary.engine["bytes"] / (4 - len(first)) <= 2048  # keys, never images
    ours, local = camlens.load_run(out), camlens.load_run(tmp_path / "local")
    assert ours.complete and repr(ours).startswith("Run('s3://bucket/ray': 4 rows")
    pd.testing.assert_frame_equal(_rows(ours), _rows(local))
    store = Store.at(out)
    for name in ours.results["map"]:
        assert store.read(name) == (tmp_path / "local" / name).read_bytes(), name
    assert len(store.read("results.jsonl").splitlines()) == 4
    stems = sorted(n.rsplit("/", 1)[-1][: -len("_cam.png")] for n in ours.results["map"])
    assert names(out) == sorted(
        ["report-data.js", "report.html", "results.csv", "results.jsonl", "results.parquet",
         "run.json"]
        + [f"maps/{s}_cam.png" for s in stems] + [f"overlays/{s}_cam.jpg" for s in stems]
    )  # fmt: skip
    assert json.loads(store.read("run.json"))["engine"] == "ray"


def test_a_second_run_is_refused_while_the_first_holds_the_lease(s3, demo):
    out = s3("leased")
    writer = remote.open_writer(out, {"model": "demo"})
    try:
        who = json.loads(Store.at(out).read(".camlens.lock"))
        args = ["explain", str(FILES[0]), "--model", "demo", "--method", "cam", "--out", out]
        result = runner.invoke(app, [*args, "--resume", "--quiet"])
        expires = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(who["expires_s"]))
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: 's3://bucket/leased' is being written by another camlens run (pid "
            f"{who['pid']} on {who['host']}, started {who['started']}); wait for it to finish or "
            "choose another --out. An object store has no file locks: the run holds the lease "
            f"s3://bucket/leased/.camlens.lock until {expires}; if that run is gone, delete that "
            "object to break its lease\n"
        )
    finally:
        writer.close()
    assert ".camlens.lock" not in names(out)
    # a lease left by a run that died expires: the next run takes it over
    Store.at(out).write(".camlens.lock", json.dumps({"token": "dead", "expires_s": 1}).encode())
    result = runner.invoke(app, [*args, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "report: s3://bucket/leased/report.html" in result.output


def test_load_run_reads_rows_maps_and_overlays_of_a_local_engine_run_in_s3(s3, demo, tmp_path):
    out = s3("local")
    settings = RunSettings(["cam", "gradcam"], batch_size=2)
    summary = explain_files(demo, FILES[:2], out, settings, echo=print)
    assert (summary.done, summary.exit_code) == (2, 0)
    explain_files(demo, FILES[:2], tmp_path / "twin", settings, echo=print)
    run, twin = camlens.load_run(out), camlens.load_run(tmp_path / "twin")
    pd.testing.assert_frame_equal(_rows(run), _rows(twin))
    for i in range(len(run)):
        assert (run.map(i) == twin.map(i)).all()
        assert (run.overlay(i, colormap="turbo") == twin.overlay(i, colormap="turbo")).all()
    assert run.info["methods"] == ["cam", "gradcam"] and len(run.failures) == 0
    assert run.image(0).shape == (64, 64, 3)


def test_a_prefix_holding_other_objects_is_refused_untouched(s3, demo):
    out = s3("theirs")
    Store.at(out).write("notes.txt", b"mine")
    with pytest.raises(camlens.CamlensValueError) as refused:
        explain_files(demo, FILES[:1], out, RunSettings(["cam"]), echo=print)
    assert str(refused.value) == (
        "--out 's3://bucket/theirs' is not empty and not a camlens run (it has no camlens "
        "run.json): choose an empty or new folder"
    )
    assert names(out) == ["notes.txt"]
    with pytest.raises(camlens.CamlensValueError) as refused:
        remote.claim(s3("theirs/notes.txt"), resume=False, overwrite=False)
    assert str(refused.value) == (
        "--out 's3://bucket/theirs/notes.txt' is a file, not a folder: choose a folder"
    )


def test_overwrite_deletes_only_what_the_run_wrote(s3, demo):
    out = s3("replaced")
    explain_files(demo, FILES[:2], out, RunSettings(["cam"]), echo=print)
    Store.at(out).write("maps/mine.png", b"not camlens'")
    Store.at(out).write(".camlens-inputs/inputs-000003.parquet", b"PAR1")  # a killed Ray run's
    with pytest.raises(camlens.CamlensValueError, match="add --resume to continue it or"):
        explain_files(demo, FILES[2:3], out, RunSettings(["cam"]), echo=print)
    explain_files(demo, FILES[2:3], out, RunSettings(["cam"], overwrite=True), echo=print)
    run = camlens.load_run(out)
    assert list(run.results["path"]) == [str(FILES[2])]
    stem = run.results["map"][0].rsplit("/", 1)[-1][: -len("_cam.png")]
    assert [n for n in names(out) if n.startswith(("maps/", "overlays/"))] == [
        f"maps/{stem}_cam.png", "maps/mine.png", f"overlays/{stem}_cam.jpg"]  # fmt: skip
    assert not [n for n in names(out) if n.startswith(".camlens-inputs/")]


def test_a_streamed_to_do_list_is_spooled_into_the_store(s3, tmp_path, monkeypatch):
    """Past one chunk, a Ray run into a store spools its to-do list there, not in the driver's
    staging folder; Ray's read tasks read it through the store's file system."""
    from camlens.runs import listing

    monkeypatch.setattr(listing, "CHUNK", 3)
    out = s3("spooled")
    store = Store.at(out)
    job = SimpleNamespace(todo=iter(FILES), out=tmp_path, writer=SimpleNamespace(store=store))
    spooled = spool.to_read(job)
    assert spooled.files == [store.path(f".camlens-inputs/inputs-00000{i}.parquet") for i in (0, 1)]
    assert names(out) == [f".camlens-inputs/inputs-00000{i}.parquet" for i in (0, 1)]
    assert not (tmp_path / ".camlens-inputs").exists() or not any(
        (tmp_path / ".camlens-inputs").iterdir()
    )  # nothing in the driver's folder
    chunks = [spool.read_chunk(f, spooled.store.filesystem)[0] for f in spooled.files]
    assert [os.fsdecode(p) for c in chunks for p in c.column("path").to_pylist()] == [
        str(f) for f in FILES]  # fmt: skip
    assert [c.column("index").to_pylist() for c in chunks] == [[0, 1, 2], [3]]


def test_load_run_reads_a_copied_phone_photo_upright_from_s3(s3, demo, tmp_path):
    """A copied input read back from a store is decoded as the local copy is: EXIF orientation
    applied (a phone photo stored sideways comes back upright)."""
    import numpy as np
    from PIL import Image

    from camlens.runs.records import RenderOptions

    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :10] = 255
    Image.fromarray(pixels).save(photo, exif=exif, quality=95)
    settings = RunSettings(["cam"], render=RenderOptions(copy_images=True))
    explain_files(demo, [photo], s3("phone"), settings, echo=print)
    explain_files(demo, [photo], tmp_path / "twin", settings, echo=print)
    ours, theirs = (
        camlens.load_run(s3("phone")).image(0),
        camlens.load_run(tmp_path / "twin").image(0),
    )
    assert ours.shape == theirs.shape == (80, 40, 3)
    assert (ours == theirs).all()
