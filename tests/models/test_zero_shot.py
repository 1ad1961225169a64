"""Zero-shot classifiers from image-text models: camlens.zero_shot on tiny random CLIPs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from needs import need
from PIL import Image
from typer.testing import CliRunner

import camlens
from camlens.cli import app
from camlens.errors import CamlensValueError
from camlens.models import specs

PROMPTS = ["a photo of a dog", "a photo of a cat", "a car"]


VIT = dict(image_size=64, layers=2, width=64, patch_size=16, head_width=32)
RESNET = dict(image_size=64, layers=(1, 1, 1, 2), width=16, head_width=16)
TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1)


def tiny_open_clip(resnet: bool = False) -> nn.Module:
    """A random-weight open_clip CLIP: 64 px images, 32-wide embeddings (ViT or ResNet tower)."""
    open_clip = need("open_clip")
    torch.manual_seed(0)
    vision = RESNET if resnet else VIT
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=TEXT).eval()


def tiny_tokenizer(folder):
    """A CLIPTokenizer over single letters, written into ``folder`` (no download)."""
    transformers = need("transformers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [*letters, *(c + "</w>" for c in letters), "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tiny_hf_clip(tokenizer) -> nn.Module:
    """A random-weight Hugging Face CLIPModel: 64 px images, 16-wide embeddings."""
    transformers = need("transformers")
    torch.manual_seed(0)
    ids = dict(
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    layers = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), num_hidden_layers=1, **layers, **ids),
        vision_config=dict(num_hidden_layers=2, image_size=64, patch_size=16, **layers),
        projection_dim=16,
    )
    return transformers.CLIPModel(config).eval()


@pytest.fixture(scope="module")
def clip() -> nn.Module:
    return tiny_open_clip()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return tiny_hf_clip(tokenizer), tokenizer


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


class Wrapper(nn.Module):
    """The hand-written zero-shot head: the image tower and fixed prompt embeddings."""

    def __init__(self, visual: nn.Module, text: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("text", F.normalize(text, dim=-1))
        self.scale = float(scale.detach().exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.visual(x), dim=-1) @ self.text.t()


def test_open_clip_logits_are_the_model_similarity(clip, x):
    open_clip = need("open_clip")
    model = camlens.zero_shot(clip, PROMPTS)
    image, text, scale = clip(x, open_clip.tokenize(PROMPTS))
    with torch.no_grad():
        torch.testing.assert_close(model(x), scale * image @ text.t(), atol=1e-5, rtol=0)
    assert model.labels == PROMPTS and model.prompts == PROMPTS
    assert model.text_embeddings.shape == (3, 32) and not model.text_embeddings.requires_grad


def test_hf_logits_are_the_model_similarity(hf, x):
    clip, tokenizer = hf
    model = camlens.zero_shot(clip, PROMPTS, tokenizer=tokenizer)
    with torch.no_grad():
        tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
        expected = clip(pixel_values=x, **tokens).logits_per_image
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_map_for_a_prompt_is_the_hand_written_wrappers(clip, x, method):
    open_clip = need("open_clip")
    model = camlens.zero_shot(clip, PROMPTS)
    with torch.no_grad():
        text = clip.encode_text(open_clip.tokenize(PROMPTS))
    wrapper = Wrapper(clip.visual, text, clip.logit_scale).eval()
    ours = camlens.explain(model, x, method=method, target=1)
    theirs = camlens.explain(wrapper, x, method=method, target=1, layer=ours.layer)
    assert ours.layer == "visual.transformer.resblocks.1.ln_1"
    torch.testing.assert_close(ours.maps, theirs.maps, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.scores, theirs.scores, atol=1e-5, rtol=0)


def test_hf_map_for_a_prompt_is_the_hand_written_wrappers(hf, x):
    clip, tokenizer = hf
    model = camlens.zero_shot(clip, PROMPTS, tokenizer=tokenizer)

    class HFWrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection
            tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
            with torch.no_grad():
                text = clip.get_text_features(**tokens).pooler_output
            self.register_buffer("text", F.normalize(text, dim=-1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            image = self.visual_projection(self.vision_model(pixel_values=x).pooler_output)
            return clip.logit_scale.exp() * F.normalize(image, dim=-1) @ self.text.t()

    ours = camlens.explain(model, x, method="gradcam", target=2)
    theirs = camlens.explain(HFWrapper().eval(), x, method="gradcam", target=2, layer=ours.layer)
    assert ours.layer == "vision_model.encoder.layers.1.layer_norm1"
    torch.testing.assert_close(ours.maps, theirs.maps, atol=1e-5, rtol=0)


def test_set_prompts_re_embeds(clip, x):
    model = camlens.zero_shot(clip, PROMPTS)
    before = model(x)
    assert model.set_prompts(["a car", "a dog"]) == ["a car", "a dog"]
    after = model(x)
    assert after.shape == (2, 2)
    torch.testing.assert_close(after[:, 0], before[:, 2], atol=1e-6, rtol=0)


def test_bad_prompts_are_refused(clip):
    with pytest.raises(CamlensValueError, match="repeated: a dog"):
        camlens.zero_shot(clip, ["a dog", "a dog"])
    with pytest.raises(CamlensValueError, match="non-empty texts"):
        camlens.zero_shot(clip, ["a dog", " "])


def test_resnet_tower_auto_layer_and_shapleycam(x):
    model = camlens.zero_shot(tiny_open_clip(resnet=True), PROMPTS)
    explained = camlens.explain(model, x[:1], method="shapleycam", target=0)
    assert explained.layer == "visual.layer4"
    assert explained.maps.shape == (1, 64, 64) and torch.isfinite(explained.maps).all()
    with pytest.raises(CamlensValueError, match="needs a vision transformer's attention"):
        camlens.explain(model, x[:1], method="rollout")


def test_token_logits_of_the_last_block_are_the_logits(clip, hf, x):
    """LeGrad's per-block scores: the last block's tokens through the head give the logits."""
    model = camlens.zero_shot(clip, PROMPTS)
    tokens = []
    hook = clip.visual.transformer.resblocks[-1].register_forward_hook(
        lambda *args: tokens.append(args[-1])
    )
    with torch.no_grad():
        logits = model(x)
        hook.remove()
        torch.testing.assert_close(model.token_logits(tokens[0]), logits, atol=1e-5, rtol=0)
    clip_hf, tokenizer = hf
    model = camlens.zero_shot(clip_hf, PROMPTS, tokenizer=tokenizer)
    with torch.no_grad():
        hidden = clip_hf.vision_model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(model.token_logits(hidden), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["rollout", "legrad"])
def test_attention_methods_on_both_vit_towers(clip, hf, x, method):
    towers = [camlens.zero_shot(clip, PROMPTS), camlens.zero_shot(hf[0], PROMPTS, tokenizer=hf[1])]
    layers = []
    for model in towers:
        explained = camlens.explain(model, x[:1], method=method, target=1)
        assert explained.maps.shape == (1, 64, 64) and torch.isfinite(explained.maps).all()
        layers.append(explained.layer)
    assert layers[0] == "visual.transformer.resblocks.0.attn+visual.transformer.resblocks.1.attn"
    assert layers[1].endswith("layers.1.self_attn")


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    """A tiny open_clip architecture registered under the name it returns."""
    open_clip = need("open_clip")
    path = tmp_path_factory.mktemp("arch") / "camlens-tiny-clip.json"
    path.write_text(json.dumps({"embed_dim": 32, "vision_cfg": VIT, "text_cfg": TEXT}))
    open_clip.add_model_config(path)
    return path.stem


def test_explain_cli_open_clip_with_a_weights_file(arch, tmp_path):
    open_clip = need("open_clip")
    torch.manual_seed(3)
    torch.save(open_clip.create_model(arch).state_dict(), tmp_path / "clip.pth")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "grey.png")
    args = ["explain", str(tmp_path / "grey.png"), "--model", f"open_clip:{arch}", "--quiet"]
    args += ["--weights", str(tmp_path / "clip.pth"), "--prompts", "a dog, a cat"]
    result = CliRunner().invoke(app, [*args, "--target", "a cat", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (row,) = [
        json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()
    ]
    assert (row["target"], row["target_name"], row["layer"]) == (
        1,
        "a cat",
        "visual.transformer.resblocks.1.ln_1",
    )
    missing = CliRunner().invoke(app, [*args[:5], "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 2
    assert "is an image-text model, whose classes are text prompts: pass --prompts" in " ".join(
        missing.output.split()
    )


def test_prompts_file_and_clear_errors(arch, tmp_path, monkeypatch):
    open_clip = need("open_clip")
    (tmp_path / "prompts.txt").write_text("a dog\n\na cat\n")
    model = specs.load_spec(f"open_clip:{arch}", prompts=["x"])
    assert camlens.models.clip.read_prompts(str(tmp_path / "prompts.txt")) == ["a dog", "a cat"]
    assert model.pretrained_cfg["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert model.input_size == (64, 64)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(CamlensValueError, match="offline, pass a local state dict: --weights FILE"):
        specs.load_spec("open_clip:ViT-B-32", "openai", prompts=["a dog"])
    with pytest.raises(CamlensValueError, match="--prompts names the classes of an image-text"):
        specs.load_spec("demo", prompts=["a dog"])


def test_serve_shows_the_prompts_and_takes_a_typed_one(clip, tmp_path):
    TestClient = need("fastapi.testclient").TestClient  # noqa: N806
    from camlens.runs.session import Session
    from camlens.serve import ModelService, create_app

    service = ModelService(Session.from_model(camlens.zero_shot(clip, PROMPTS), device="cpu"))
    client = TestClient(create_app(service), base_url="http://127.0.0.1")
    info = client.get("/api/model").json()
    assert (info["labels"], info["classes"], info["prompts"], info["size"]) == (
        PROMPTS,
        3,
        True,
        64,
    )
    added = client.post("/api/prompts", json={"prompts": [*PROMPTS, "<b>a boat</b>"]})
    assert added.status_code == 200, added.text
    assert added.json() == {"labels": [*PROMPTS, "<b>a boat</b>"], "classes": 4}
    assert client.get("/api/model").json()["classes"] == 4
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, "PNG")
    files = {"image": ("x.png", buffer.getvalue())}
    answer = client.post("/api/explain", files=files, data={"target": "3"}).json()
    assert (answer["target"], answer["target_name"]) == (3, "<b>a boat</b>")
    refused = client.post("/api/prompts", json={"prompts": ["a dog", "a dog"]})
    assert (refused.status_code, refused.json()["error"]) == (
        400,
        "prompts must differ; repeated: a dog",
    )
    service.close()


def test_hf_spec_loads_a_saved_folder(hf, x, tmp_path):
    clip, tokenizer = hf
    clip.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    model = specs.load_spec(f"hf:{tmp_path / 'clip'}", prompts=PROMPTS)
    expected = camlens.zero_shot(clip, PROMPTS, tokenizer=tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected(x), atol=1e-5, rtol=0)
    assert model.input_size == (64, 64) and model.labels == PROMPTS
