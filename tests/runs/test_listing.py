"""Streamed inputs (:mod:`camlens.runs.listing`) without Ray: a folder is listed lazily with the
files and order of ``collect``, fed in chunks of bounded size, named from each path alone, and
resumed with the same names."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from camlens.images.decode import collect
from camlens.runs import distributed, listing, objects, spool
from camlens.runs.pipeline import Remaining, Summary, to_do
from camlens.runs.store import Store


@pytest.fixture
def tree(tmp_path):
    """1,000 empty ``.jpg`` files in 20 folders (every stem in every folder: ``cat0.jpg``...),
    a text file and a hidden file beside them, and an empty folder."""
    root = tmp_path / "images"
    for k in range(20):
        folder = root / f"d{k:02d}"
        folder.mkdir(parents=True)
        for i in range(50):
            (folder / f"cat{i}.jpg").touch()
    (root / "d03" / "notes.txt").touch()
    (root / "d03" / ".hidden.jpg").touch()
    (root / "empty").mkdir()
    return root


def test_a_folder_is_listed_lazily_with_the_files_and_order_of_collect(tree, monkeypatch):
    out = tree.parent / "out"
    streamed = listing.list_inputs([str(tree)], out)
    opened = []
    scandir = os.scandir
    monkeypatch.setattr(listing.os, "scandir", lambda p: opened.append(p) or scandir(p))
    first = next(iter(streamed))
    assert first == (tree / "d00" / "cat0.jpg").resolve()
    assert len(opened) == 2  # the root and its first folder: nothing more was walked yet
    monkeypatch.setattr(listing.os, "scandir", scandir)
    found = collect([str(tree)], exclude=out)
    assert list(streamed) == found.files and len(found.files) == 1000
    tally = streamed.tally()
    assert (streamed.count, tally.ignored, tally.failures) == (1000, found.ignored, [])


def test_the_run_folder_inside_the_input_is_left_out_and_an_empty_folder_fails(tree):
    out = tree / "d05"
    streamed = listing.list_inputs([str(tree), str(tree / "empty")], out)
    tally = streamed.tally()
    assert list(streamed) == collect([str(tree)], exclude=out).files
    assert streamed.count == 950
    assert [(f.path, f.reason) for f in tally.failures] == [
        (str(tree / "empty"), "folder holds no image files")
    ]


def test_chunks_draw_only_what_they_give_and_keep_the_order(tree):
    pulled = []

    def files():
        for file in listing.list_inputs([str(tree)], tree.parent / "out"):
            pulled.append(file)
            yield file

    feed = listing.chunks(files(), 300)
    first = next(feed)
    assert len(first) == len(pulled) == 300  # the driver holds one chunk, not the listing
    rest = list(feed)
    assert [len(c) for c in rest] == [300, 300, 100]
    assert first + sum(rest, []) == pulled == collect([str(tree)]).files


def test_stream_names_are_distinct_and_the_same_on_a_second_listing(tree):
    streamed = listing.list_inputs([str(tree)], tree.parent / "out")
    names = [listing.stream_name(f) for f in streamed]
    assert len(set(names)) == 1000 and len({n.lower() for n in names}) == 1000
    assert names == [listing.stream_name(f) for f in streamed]
    assert names[0].startswith("cat0-") and len(names[0]) == len("cat0-") + 16
    assert listing.stream_name("s3://bucket/a b/c d.jpg").startswith("c_d-")


def test_a_resumed_streamed_run_lists_only_what_is_left(tree):
    streamed = listing.list_inputs([str(tree)], tree.parent / "out")
    streamed.tally()
    files = list(streamed)
    done = {(str(f), "cam") for f in files[:700]} | {(str(files[800]), "gradcam")}
    out = tree.parent / "out"
    writer = SimpleNamespace(done=done, out=out, label=str(out))
    said, totals, summary = [], [], Summary()
    todo = to_do(streamed, writer, ["cam"], summary, said.append, totals.append)  # type: ignore[arg-type]
    assert isinstance(todo, Remaining) and len(todo) == 300 and totals == [300]
    assert list(todo) == files[700:] and summary.resumed == 700
    assert said == [f"resume: 700 image(s) already in {writer.out}, 300 to do"]
    empty = SimpleNamespace(done=set(), out=out, label=str(out))
    fresh = to_do(streamed, empty, ["cam"], Summary(), said.append, None)  # type: ignore[arg-type]
    assert len(fresh) == 1000


def test_the_ray_engine_spools_a_run_past_one_chunk_in_chunks(tree, monkeypatch):
    monkeypatch.setattr(listing, "CHUNK", 400)
    out = tree.parent / "out"
    engine = distributed.RayEngine({}, distributed.Cluster())
    found = engine.inputs([tree], out, labels=False)
    assert isinstance(found.files, listing.Listing) and (found.ignored, found.failures) == (1, [])
    assert isinstance(engine.inputs([tree], out, labels=True).files, list)  # classes: listed
    todo = Remaining(found.files, set(), ["cam"], 1000)
    job = SimpleNamespace(todo=todo, out=out, writer=SimpleNamespace(store=Store.at(out)))
    spooled = spool.to_read(job)  # type: ignore[arg-type]
    assert isinstance(spooled, spool.Spool)
    tables = [pq.read_table(f) for f in spooled.files]
    assert [t.num_rows for t in tables] == [400, 400, 200]
    rows = [row for t in tables for row in t.to_pylist()]
    files = collect([str(tree)]).files
    assert [r["index"] for r in rows] == list(range(1000))
    assert [Path(os.fsdecode(r["path"])) for r in rows] == files
    assert [r["stem"] for r in rows] == [listing.stream_name(f) for f in files]
    small = distributed.RayEngine({}, distributed.Cluster()).inputs([tree / "d00"], out, False)
    assert small.files == collect([str(tree / "d00")]).files  # one chunk: listed as before


def test_a_prefix_is_walked_one_folder_at_a_time_in_the_order_of_list_uris(tree, monkeypatch):
    from pyarrow import fs

    (tree / "d03" / "a-b").mkdir()
    (tree / "d03" / "a-b" / "x.jpg").touch()  # "a-b/" sorts before "a.jpg" and "a/" after
    (tree / "d03" / "a.jpg").touch()
    (tree / "d03" / "a").mkdir()
    (tree / "d03" / "a" / "y.jpg").touch()
    uri = f"file://{tree}"
    folders = []
    selector = fs.FileSelector
    monkeypatch.setattr(fs, "FileSelector", lambda *a, **k: folders.append(selector(*a, **k))
                        or folders[-1])  # fmt: skip
    streamed = listing.list_inputs([uri], tree.parent / "out")
    next(iter(streamed))
    assert len(folders) == 2 and not any(s.recursive for s in folders)  # root, d00: no more
    monkeypatch.setattr(fs, "FileSelector", selector)
    tally = streamed.tally()
    expected, failures, _ = objects.list_uris([uri])
    assert list(streamed) == expected and (tally.failures, failures) == ([], [])
    missing = listing.list_inputs([f"{uri}/nowhere"], tree.parent / "out")
    assert [(f.path, f.reason) for f in missing.tally().failures] == [
        (f"{uri}/nowhere", "no such file or folder")
    ]
