"""``camlens serve`` on the issue-22 models: an exported ONNX model (gradient-free methods only)
and a regression output (``target=output:K``), each answer equal to the library's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from needs import need
from test_api import as_camlens_explain, decoded, photo
from toy_models import SmallCNN

from camlens.serve import create_app

TestClient = need("fastapi.testclient").TestClient


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """toy_models.SmallCNN (seed 0) exported to ONNX for a fixed 64 px input."""
    need("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(SmallCNN().eval(), (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False)
    return path


def _serve(spec: str, **options):
    from camlens.runs.session import Session
    from camlens.serve import ModelService

    service = ModelService(Session.from_spec(spec, **options))
    return service, TestClient(create_app(service), base_url="http://127.0.0.1")


def test_an_onnx_model_is_served_with_its_gradient_free_methods(onnx_file, png) -> None:
    from camlens.backends.base import ONNX_METHODS

    served, client = _serve(str(onnx_file))
    reference, torch_client = _serve("toy_models:SmallCNN", size=64)
    try:
        info = client.get("/api/model").json()
        assert info["size"] == 64 and {m["name"] for m in info["methods"]} == set(ONNX_METHODS)
        image = {"image": ("x.png", png(photo(3)))}
        # torch's auto layer is the module `features` (BatchNorm, folded into the convolution by
        # the export); ONNX's auto is the functional ReLU after it, which torch cannot hook
        assert info["auto"] == "/Relu_output_0"
        layer = "/features/features.2/Conv_output_0"
        answer = client.post(
            "/api/explain", files=image, data={"method": "eigencam", "layer": layer}
        )
        same = torch_client.post("/api/explain", files=image, data={"method": "eigencam"}).json()
        assert (answer.status_code, same["layer"]) == (200, "features")
        answer = answer.json()
        assert (answer["target"], answer["layer"]) == (same["target"], layer)
        assert answer["score"] == pytest.approx(same["score"], abs=1e-4)
        assert np.abs(decoded(answer).astype(int) - decoded(same)).max() <= 1
        refused = client.post("/api/explain", files=image, data={"method": "gradcam"})
        assert refused.status_code == 400 and refused.json()["error"].startswith(
            "method 'gradcam' needs gradients, which camlens does not compute through an ONNX"
        )
    finally:
        served.close()
        reference.close()


def test_a_regression_output_is_served_with_its_score_and_no_probability(png) -> None:
    served, client = _serve("toy_models:SmallCNN", size=64)
    try:
        image = {"image": ("x.png", png(photo(4)))}
        answer = client.post("/api/explain", files=image, data={"target": "output:3"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        with torch.no_grad():
            x = as_camlens_explain(served, photo(4), "toy_models:SmallCNN")
            value = float(served.session.model(x)[0, 3])
        assert body["target"] == 3 and body["probability"] is None
        assert body["score"] == pytest.approx(value, abs=1e-4)
    finally:
        served.close()
