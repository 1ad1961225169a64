"""The JSON API in process (ASGI test client): real values, the library's own maps."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import torch
from needs import need
from PIL import Image
from toy_models import SmallCNN

import camlens
from camlens.images.preprocessing import resolve
from camlens.serve import create_app
from camlens.serve.service import probabilities

TestClient = need("fastapi.testclient").TestClient  # every test here serves the app

#: Maps summed over many gradient passes: torch's CPU convolution backward is not bitwise
#: reproducible from call to call here (up to 6e-4 on an integrated-gradients map, the library
#: called twice in one process), which can move a pixel across an 8-bit rounding boundary.
SUMMED = {"integrated-gradients", "smoothgrad"}


def decoded(answer: dict) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(answer["map"])))
    assert image.mode == "L" and image.size == (answer["width"], answer["height"])
    return np.array(image)


def as_camlens_explain(service, image: np.ndarray, spec: str) -> torch.Tensor:
    """The input ``camlens explain`` builds: whole image resized, the model's preprocessing."""
    size = service.session.size
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    unit = torch.from_numpy(np.array(resized, dtype=np.float32) / 255.0)  # one 8-bit rounding
    return resolve("auto", spec, service.session.model)(unit.permute(2, 0, 1)[None])


def photo(seed: int, height: int = 90, width: int = 120) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def test_health(client) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}


def test_model_description(client, demo_service) -> None:
    info = client.get("/api/model").json()
    infos, auto = camlens.layers(demo_service.session.model, torch.zeros(1, 3, 64, 64))
    assert info["spec"] == "demo" and info["size"] == 64 and info["classes"] == 10
    assert info["labels"] == [str(i) for i in range(10)]
    assert [layer["name"] for layer in info["layers"]] == [i.name for i in infos]
    assert [layer["name"] for layer in info["layers"] if layer["auto"]] == [auto] == [info["auto"]]
    assert [m["name"] for m in info["methods"]] == camlens.methods(demo_service.session.model)
    assert info["colormaps"]["gray"][255] == [255, 255, 255]
    assert len(info["colormaps"]["jet"]) == 256


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        *[("demo", {"method": name}) for name in camlens.methods(SmallCNN())],
        ("demo", {"method": "gradcam++", "target": "5", "layer": "backbone.block4"}),
        ("toy_models:SmallCNN", {"method": "layercam", "target": "2"}),
    ],
)
def test_served_map_is_the_librarys(spec, fields, demo_service, cnn_service, png) -> None:
    service = demo_service if spec == "demo" else cnn_service
    client = TestClient(create_app(service), base_url="http://127.0.0.1")
    image = photo(1)
    answer = client.post("/api/explain", files={"image": ("x.png", png(image))}, data=fields)
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    x = as_camlens_explain(service, image, spec)
    target = int(fields["target"]) if "target" in fields else None
    layer = fields.get("layer", "auto")
    method = fields.get("method", "gradcam")
    used = answer["precision"]  # --precision auto: what the probe chose (fp32 on this VM)
    exp = camlens.explain(service.session.model, x, method, target, layer, precision=used)
    assert exp.extra["precision"] == used
    expected = np.round(exp.maps[0].numpy() * 255).astype(np.int16)
    # a level apart at most, on a few pixels: summation order (Monte-Carlo sums; channels-last
    # convolutions in other batch shapes) moves the last float bits
    differ = np.abs(decoded(answer).astype(np.int16) - expected)
    assert differ.max() <= 1 and (differ > 0).mean() < (0.01 if exp.method in SUMMED else 0.001)
    probs = probabilities(service.session.model(x))[0]
    assert answer["predicted"] == int(probs.argmax())
    wanted = target if target is not None else int(probs.argmax())
    assert answer["target"] == int(exp.targets[0]) == wanted
    assert answer["layer"] == exp.layer and answer["method"] == exp.method
    assert answer["width"] == answer["height"] == service.session.size
    assert answer["probability"] == pytest.approx(float(exp.probs[0]), abs=1e-6)
    assert [entry["class"] for entry in answer["top"]] == probs.topk(5).indices.tolist()
    got = [entry["probability"] for entry in answer["top"]]
    np.testing.assert_allclose(got, probs.topk(5).values.detach().numpy(), rtol=1e-5)
    names = service.session.names or [str(i) for i in range(5)]  # SmallCNN has none
    assert [entry["name"] for entry in answer["top"]] == [names[i] for i in probs.topk(5).indices]


@pytest.mark.parametrize(
    ("fields", "upload", "status", "message"),
    [
        (
            {"target": "10"},
            None,
            400,
            "target: expected 'pred', a class index 0..9, a class name or output:K, got '10'",
        ),
        (
            {"target": "cat"},
            None,
            400,
            "target: expected 'pred', a class index 0..9, a class name or output:K, got 'cat'",
        ),
        (
            {"layer": "fc"},
            None,
            400,
            "layer: expected 'auto' or one of the model's explainable layers (backbone.block1.0, "
            "backbone.block1, backbone.block2.0, backbone.block2, backbone.block3.0, "
            "backbone.block3, backbone.block4.0, backbone.block4, backbone.block5.0, "
            "backbone.block5), got 'fc'",
        ),
        (
            {"method": "gradkam"},
            None,
            400,
            "method: unknown method 'gradkam'; valid methods: " + ", ".join(camlens.methods()),
        ),
        (
            {},
            b"%PDF-1.4 not an image",
            415,
            "image: not an image (Pillow cannot identify its format)",
        ),
        ({}, b"", 400, "image: expected an image file, got an empty upload (0 bytes)"),
    ],
)
def test_bad_requests_name_the_problem(client, fields, upload, status, message, png) -> None:
    data = png(photo(2)) if upload is None else upload
    answer = client.post("/api/explain", files={"image": ("x.png", data)}, data=fields)
    assert (answer.status_code, answer.json()) == (status, {"error": message})
    # the server keeps serving
    assert client.post("/api/explain", files={"image": ("x.png", png(photo(2)))}).status_code == 200


def test_missing_image_field(client) -> None:
    answer = client.post("/api/explain", data={"method": "gradcam"})
    assert (answer.status_code, answer.json()) == (400, {"error": "image: Field required"})


def test_upload_limit_and_decompression_bomb(demo_service, png) -> None:
    app = create_app(demo_service, max_bytes=50_000, max_pixels=1_000_000)
    client = TestClient(app, base_url="http://127.0.0.1")
    big = png(photo(3, 300, 300))  # ~270 kB of noise
    answer = client.post("/api/explain", files={"image": ("big.png", big)})
    assert answer.status_code == 413
    assert answer.json()["error"].startswith("request body: expected at most 50,000 bytes, got ")
    bomb = io.BytesIO()  # a 4,000 x 4,000 blank image compresses to a few kB
    Image.new("1", (4000, 4000)).save(bomb, "PNG")
    assert len(bomb.getvalue()) < 50_000
    answer = client.post("/api/explain", files={"image": ("bomb.png", bomb.getvalue())})
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "image: too large: 4000x4000 = 16.0 Mpx, over the limit of 1.0 Mpx"},
    )


def test_token_host_and_headers(demo_service) -> None:
    app = create_app(demo_service, token="s3cret", allowed_hosts=["*"])
    client = TestClient(app, base_url="http://192.0.2.7")
    assert client.get("/api/health").status_code == 200  # open: it reveals nothing
    answer = client.get("/api/model")
    assert (answer.status_code, answer.json()) == (
        401,
        {"error": "missing or wrong X-Camlens-Token header"},
    )
    assert client.get("/api/model", headers={"X-Camlens-Token": "s3cre"}).status_code == 401
    assert client.get("/api/model", headers={"X-Camlens-Token": "s3cret"}).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<script" in page.text and "<script>" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # without a token only loopback Host headers are answered (DNS rebinding)
    loopback = TestClient(create_app(demo_service), base_url="http://127.0.0.1")
    assert loopback.get("/api/health").status_code == 200
    assert loopback.get("/api/health", headers={"host": "attacker.example"}).status_code == 400


def test_requests_are_micro_batched(cnn_service) -> None:
    """Concurrent requests with one method and layer share a batch; each image gets its map."""
    from camlens.serve import ModelService

    service = ModelService(cnn_service.session, window=0.5, max_batch=6)
    try:
        images = [photo(10 + i) for i in range(6)]
        requests = [service.request(image, "gradcam", "pred", "auto") for image in images]
        futures: list = [None] * 6
        start = threading.Barrier(6)

        def send(i: int) -> None:
            start.wait()
            futures[i] = service.submit(requests[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers = [future.result(timeout=60) for future in futures]
        assert service.batcher.batches == [6]
        for image, answer in zip(images, answers):
            x = as_camlens_explain(service, image, "toy_models:SmallCNN")
            exp = camlens.explain(service.session.model, x)
            expected = np.round(exp.maps[0].numpy() * 255).astype(np.int16)
            # a batch of 6 and a batch of 1 differ by float rounding only
            assert np.abs(decoded(answer).astype(np.int16) - expected).max() <= 1
            assert answer["target"] == int(exp.targets[0])
    finally:
        service.close()


def test_a_failing_model_is_a_json_500_and_the_server_keeps_serving(cnn_service, png) -> None:
    """A model that raises on some inputs: that request gets a JSON 500, the next one its map."""
    from camlens.runs.session import Session
    from camlens.serve import ModelService

    class Fussy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = cnn_service.session.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x.mean(dim=(1, 2, 3)) > 1.5).any()):  # a bright image
                raise RuntimeError("too bright for this model")
            return self.inner(x)

    service = ModelService(Session.from_model(Fussy(), spec="fussy", size=64))
    try:
        app = create_app(service)
        client = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
        white = np.full((40, 40, 3), 255, np.uint8)
        answer = client.post("/api/explain", files={"image": ("w.png", png(white))})
        assert (answer.status_code, answer.json()) == (
            500,
            {"error": "the server failed on this request: RuntimeError: too bright for this model"},
        )
        answer = client.post("/api/explain", files={"image": ("p.png", png(photo(4)))})
        assert answer.status_code == 200 and answer.json()["layer"] == "inner.features"
    finally:
        service.close()


def test_target_takes_class_names_as_the_cli_does(tmp_path, png) -> None:
    from camlens.runs.session import Session
    from camlens.serve import ModelService

    labels = tmp_path / "classes.txt"
    labels.write_text("cat\ngolden retriever\ndog\nfox\nowl\n")
    session = Session.from_spec("toy_models:SmallCNN", size=64, labels=labels)
    service = ModelService(session)
    try:
        client = TestClient(create_app(service), base_url="http://127.0.0.1")
        for target, index in [("Golden Retriever", 1), ("dog", 2), ("4", 4), ("pred", None)]:
            answer = client.post(
                "/api/explain", files={"image": ("x.png", png(photo(5)))}, data={"target": target}
            ).json()
            assert answer["target"] == (answer["predicted"] if index is None else index)
            assert answer["target_name"] == session.name(answer["target"])
        answer = client.post(
            "/api/explain", files={"image": ("x.png", png(photo(5)))}, data={"target": "label"}
        )
        assert (answer.status_code, answer.json()) == (
            400,
            {
                "error": "target: expected 'pred', a class index 0..4, a class name or output:K, "
                "got 'label'"
            },
        )
    finally:
        service.close()


def test_a_class_name_target_is_the_class_and_map_camlens_explain_gives(tmp_path, png) -> None:
    """One target parser: ``target=<class name>`` in the JSON API explains the class, with the
    map, that ``camlens explain --target <class name>`` writes to its run."""
    from typer.testing import CliRunner

    from camlens.cli import app
    from camlens.runs.settings import ModelSettings
    from camlens.serve import ModelService

    labels = tmp_path / "classes.txt"
    labels.write_text("cat\ngolden retriever\ndog\nfox\nowl\n")
    image = tmp_path / "in" / "x.png"
    image.parent.mkdir()
    image.write_bytes(png(photo(6)))
    spec = ModelSettings("toy_models:SmallCNN", size=64, labels=labels, device="cpu")
    args = ["explain", str(image), "--model", spec.model, "--size", "64", "--labels", str(labels)]
    args += ["--target", "Golden Retriever", "--device", "cpu", "-q", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = camlens.load_run(tmp_path / "o").results.itertuples()
    service = ModelService(spec.load())
    try:
        client = TestClient(create_app(service), base_url="http://127.0.0.1")
        answer = client.post(
            "/api/explain",
            files={"image": ("x.png", image.read_bytes())},
            data={"target": "Golden Retriever"},
        ).json()
    finally:
        service.close()
    assert (
        (answer["target"], answer["target_name"])
        == (row.target, row.target_name)
        == (1, "golden retriever")
    )  # noqa: E501
    assert answer["score"] == pytest.approx(row.score, rel=1e-5)
    served = decoded(answer)
    written = np.array(Image.open(tmp_path / "o" / row.map))
    assert served.shape == written.shape and np.abs(served.astype(int) - written).max() <= 1
