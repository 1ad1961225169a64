"""The settings builder: words checked once, before the model loads, with the command line's
messages, for the command line, ``camlens serve`` and the Ray engine alike."""

from __future__ import annotations

import inspect

import pytest
from needs import need

from camlens.errors import CamlensValueError
from camlens.runs import distributed
from camlens.runs.distributed import Cluster
from camlens.runs.memory import GPU_ACTOR_BATCH
from camlens.runs.records import RenderOptions
from camlens.runs.session import Session
from camlens.runs.settings import ExplainSettings, ModelSettings
from camlens.serve.launch import Settings as ServeSettings

DEMO = ModelSettings("demo")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: everything here is refused before the load."""
    monkeypatch.setattr("camlens.models.specs.load_spec", lambda *a, **k: pytest.fail("loaded"))


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ({"methods": "gradcam,nope"}, "unknown method 'nope'"),
        ({"render": RenderOptions(colormap="jte")}, "unknown colormap 'jte'"),
        ({"render": RenderOptions(alpha=2.0)}, "--alpha must be in [0, 1], got 2.0"),
        ({"render": RenderOptions(threshold=-1.0)}, "--threshold must be in [0, 1], got -1.0"),
        (
            {"render": RenderOptions(overlay_format="gif")},
            "--overlay-format must be one of jpg, webp, png, got 'gif'",
        ),
        ({"min_score": 1.5}, "--min-score must be in [0, 1], got 1.5"),
        ({"resume": True, "overwrite": True}, "--overwrite replaces it: choose one of them"),
        ({"task": "count"}, "--task must be one of classify, detect, segment, got 'count'"),
        ({"task": "detect", "target": "label"}, "--task detect takes --target pred or a class"),
        ({"target": "label"}, "--target label explains the true class: add --labels-from-folders"),
        ({"class_map": "m.json"}, "--class-map names the classes of folders: add --labels-from"),
    ],
)
def test_explain_settings_refuse_bad_words_before_the_model_loads(
    tmp_path, no_model, words, message
):
    with pytest.raises(CamlensValueError) as error:
        ExplainSettings(model=DEMO, out=tmp_path / "out", **words)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_explain_settings_resolve_words_and_the_model_checks_the_rest(tmp_path):
    request = ExplainSettings(
        model=DEMO, out=str(tmp_path / "out"), methods="gradcam,cam,gradcam", target="3"
    )
    assert request.methods == ["gradcam", "cam"] and request.out == tmp_path / "out"
    assert request.task_settings() is None
    session = request.session()
    settings = request.run_settings(session)
    assert (settings.methods, settings.target, settings.batch_size) == (["gradcam", "cam"], 3, 16)
    with pytest.raises(CamlensValueError, match="--target 10 is out of range"):
        ExplainSettings(model=DEMO, out=tmp_path / "out", target="10").run_settings(session)
    ray_gpus = ExplainSettings(
        model=DEMO,
        out=tmp_path / "g",
        batch_size="auto",
        cluster=Cluster("ray://head:10001", gpus_per_worker=1),
    )  # the driver (a CPU) cannot measure its actors' GPUs: they halve what does not fit
    assert ray_gpus.run_settings(session).batch_size == GPU_ACTOR_BATCH == 64
    detect = ExplainSettings(model=DEMO, out=tmp_path / "o", task="detect", min_score=0.2)
    assert detect.model.preprocess == "unit"  # torchvision's detectors normalise inside
    assert (detect.task_settings().task, detect.task_settings().threshold) == ("detect", 0.2)


def test_model_settings_spec_is_what_session_from_spec_takes_but_the_device():
    # network: the model a Ray actor receives already loaded, not a setting
    taken = set(inspect.signature(Session.from_spec).parameters) - {"device", "network"}
    assert set(DEMO.spec()) == taken
    with pytest.raises(TypeError):
        ModelSettings("demo", None, "auto", None, None, True)  # type: ignore[misc]  # by keyword


def test_serve_settings_are_model_settings():
    settings = ServeSettings(weights="none", size=64, seed=3)
    assert isinstance(settings, ModelSettings) and settings.model == "demo"
    assert settings.spec()["seed"] == 3 and settings.host == "127.0.0.1"


def test_distributed_explain_checks_its_words_as_the_command_line_does(tmp_path, no_model):
    samples = tmp_path / "in"
    samples.mkdir()
    with pytest.raises(CamlensValueError, match=r"^--alpha must be in \[0, 1\], got 2.0$"):
        distributed.explain(
            [samples], model="demo", out=tmp_path / "out", render=RenderOptions(alpha=2.0)
        )
    need("ray")  # its absence is said first
    with pytest.raises(CamlensValueError, match=r"^--workers must be at least 1, got 0$"):
        distributed.explain([samples], model="demo", out=tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def test_distributed_explain_passes_prompts_to_the_model_as_the_command_line_does(tmp_path):
    """``prompts`` reach the model spec (an image-text model's classes): on another model they
    are the command line's refusal, before Ray starts."""
    with pytest.raises(CamlensValueError, match=r"^--prompts names the classes of an image-text"):
        distributed.explain([tmp_path], model="demo", out=tmp_path / "out", prompts="a cat,a dog")
