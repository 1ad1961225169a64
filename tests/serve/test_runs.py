"""/api/runs in process: a real run folder's summary, filtered pages, files, and the guards."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from needs import need
from PIL import Image

import camlens
from camlens.serve import create_app
from camlens.serve.runs import Filters, Runs

TestClient = need("fastapi.testclient").TestClient  # every test here serves the app


@pytest.fixture(scope="module")
def run(run_folder):
    return camlens.load_run(run_folder)


@pytest.fixture(scope="module")
def client(demo_service, run_folder):
    app = create_app(demo_service, runs=Runs([run_folder]))
    return TestClient(app, base_url="http://127.0.0.1")


def test_listing_and_summary(client, run) -> None:
    from camlens.models.checkpoint import demo_path

    assert client.get("/api/runs").json() == [
        {
            "id": 0,
            "name": "demo-run",
            "model": "demo",
            "methods": ["gradcam", "cam"],
            "rows": 32,
            "failures": 1,
        }
    ]
    summary = client.get("/api/runs/0").json()
    assert (summary["rows"], summary["images"]) == (32, 16)
    assert summary["methods"] == {"gradcam": 16, "cam": 16}
    assert summary["accuracy"] == pytest.approx(float(run.results["correct"].astype(bool).mean()))
    assert summary["failures"] == [
        {
            "path": str(demo_path() / "samples" / "boxes.csv"),
            "error": "not an image (Pillow cannot identify its format)",
        }
    ]
    counts = run.results["predicted"].value_counts()
    assert {c["class"]: c["rows"] for c in summary["predicted"]} == {
        int(k): int(v) for k, v in counts.items()
    }
    assert summary["info"]["labels"] == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("params", "select"),
    [
        ({"method": "cam"}, lambda f: f["method"] == "cam"),
        ({"mistakes": "true"}, lambda f: f["correct"] == False),  # noqa: E712
        ({"predicted": "3"}, lambda f: f["predicted"] == 3),
        (
            {"true": "5", "method": "gradcam"},
            lambda f: (f["true_label"] == 5) & (f["method"] == "gradcam"),
        ),
        (
            {"min_probability": "0.5", "max_probability": "0.99"},
            lambda f: (f["probability"] >= 0.5) & (f["probability"] <= 0.99),
        ),
    ],
)
def test_filters_match_pandas(client, run, params, select) -> None:
    frame = run.results
    expected = frame.index[select(frame).fillna(False).astype(bool)].tolist()
    answer = client.get("/api/runs/0/rows", params={**params, "limit": 500}).json()
    assert answer["total"] == len(expected)
    assert [row["row"] for row in answer["rows"]] == expected


def test_sort_and_pages(client, run) -> None:
    order = run.results.sort_values("probability", ascending=False, kind="stable").index.tolist()
    pages = [
        client.get(
            "/api/runs/0/rows",
            params={"sort": "probability", "descending": "true", "offset": start, "limit": 10},
        ).json()
        for start in (0, 10, 20, 30)
    ]
    assert [p["total"] for p in pages] == [32] * 4
    assert [row["row"] for p in pages for row in p["rows"]] == order
    row = pages[0]["rows"][0]
    assert row["overlay"] == run.results["overlay"][row["row"]]


def test_bad_queries_are_400(client) -> None:
    answer = client.get("/api/runs/0/rows", params={"sort": "size"})
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "sort: expected one of row, probability, target_probability, predicted, true, "
         "stem, got 'size'"},
    )  # fmt: skip
    answer = client.get("/api/runs/0/rows", params={"limit": 0})
    assert answer.status_code == 400 and answer.json()["error"].startswith("limit: ")
    answer = client.get("/api/runs/7")
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "run: expected a run number 0..0, got 7"},
    )


def test_files_only_from_inside_the_run(client, run, run_folder, tmp_path) -> None:
    overlay = run.results["overlay"][0]
    answer = client.get(f"/api/runs/0/files/{overlay}")
    assert answer.status_code == 200
    assert answer.content == (run_folder / overlay).read_bytes()
    secret = tmp_path / "secret.png"
    secret.write_bytes((run_folder / overlay).read_bytes())
    (run_folder / "overlays" / "escape.png").symlink_to(secret)
    outside = "path: expected a file inside run 0's folder, got "
    for path, status, message in [
        ("..%2F..%2Fsecret.png", 400, outside + "'../../secret.png'"),
        ("overlays/..%2F..%2F..%2Fetc%2Fpasswd", 400, outside + "'overlays/../../../etc/passwd'"),
        ("%2Fetc%2Fpasswd", 400, outside + "'/etc/passwd'"),
        ("overlays/escape.png", 400, outside + "'overlays/escape.png'"),
        (
            "report.html",
            400,
            "path: expected an image (.png, .jpg, .jpeg, .webp), got 'report.html'",
        ),
        ("maps/none.png", 404, "no file 'maps/none.png' in run 0"),
    ]:
        answer = client.get(f"/api/runs/0/files/{path}")
        assert (answer.status_code, answer.json()) == (status, {"error": message}), path


def test_original_image_by_row(client, run) -> None:
    answer = client.get("/api/runs/0/rows/5/image")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(answer.content))), run.image(5))


def test_without_runs(demo_service) -> None:
    client = TestClient(create_app(demo_service), base_url="http://127.0.0.1")
    assert client.get("/api/runs").json() == []
    answer = client.get("/api/runs/0")
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "no run folders: start camlens serve with --run FOLDER"},
    )


def test_fifty_thousand_rows_page_fast(tmp_path) -> None:
    """A 50,000-row run: a filtered, sorted page in well under a second."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from camlens.runs.folder import schema

    n = 50_000
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, 100, n)
    truth = np.where(rng.random(n) < 0.8, predicted, rng.integers(0, 100, n))
    columns = {
        "path": [f"/data/{i:05d}.jpg" for i in range(n)],
        "stem": [f"{i:05d}" for i in range(n)],
        "method": np.where(np.arange(n) % 2, "cam", "gradcam"),
        "predicted": predicted,
        "probability": rng.random(n),
        "true_label": truth,
        "correct": predicted == truth,
        "map": [f"maps/{i:05d}.png" for i in range(n)],
        "overlay": [f"overlays/{i:05d}.jpg" for i in range(n)],
    }
    table = pa.table(
        {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema()}, schema=schema()
    )
    pq.write_table(table, tmp_path / "results.parquet")
    (tmp_path / "run.json").write_text(json.dumps({"format": "camlens-run", "version": 1}))
    runs = Runs([tmp_path])
    filters = Filters(method="cam", mistakes=True, min_probability=0.2, sort="probability")
    started = time.perf_counter()
    for offset in range(0, 600, 60):
        filters.offset = offset
        page = runs.rows(0, filters)
    seconds = (time.perf_counter() - started) / 10
    frame = runs.runs[0].results
    keep = (
        (frame["method"] == "cam") & ~frame["correct"].astype(bool) & (frame["probability"] >= 0.2)
    )
    assert page["total"] == int(keep.sum())
    expected = frame[keep].sort_values("probability", kind="stable").index[540:600].tolist()
    assert [row["row"] for row in page["rows"]] == expected
    assert seconds < 0.5, f"{seconds:.3f} s a page"


@pytest.mark.parametrize("damaged", ["results.parquet", "parts/part-000099.parquet"])
def test_a_damaged_run_is_skipped_and_the_others_served(
    demo_service, run_folder, tmp_path, damaged
) -> None:
    import shutil

    from camlens.errors import CamlensWarning

    broken = tmp_path / "broken"
    shutil.copytree(run_folder, broken)
    (broken / damaged).parent.mkdir(exist_ok=True)
    (broken / damaged).write_bytes(b"PAR1 not a parquet file at all")
    with pytest.warns(CamlensWarning) as caught:
        runs = Runs([broken, run_folder])
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"run {str(broken)!r} skipped: it cannot be read (")
    assert message.endswith("); the other runs are served (camlens explain --resume repairs a run)")
    assert [folder for folder, _ in runs.skipped] == [str(broken)]
    client = TestClient(create_app(demo_service, runs=runs), base_url="http://127.0.0.1")
    assert [run["name"] for run in client.get("/api/runs").json()] == ["demo-run"]
    assert client.get("/api/runs/0/rows").json()["total"] == 32
    # camlens serve says it on the terminal instead (launch echoes build's list)
    from camlens.serve.launch import Settings, build

    _, skipped = build(Settings(runs=[broken, run_folder]))
    assert skipped == runs.skipped
