"""Model specs for image-text models, explained as zero-shot classifiers of ``--prompts``.

- ``open_clip:ARCH``: ``open_clip.create_model(ARCH)`` with random weights (``--weights`` none),
  a local state dict (``--weights FILE``, read with ``weights_only=True``) or an open_clip
  pretrained tag (``--weights openai``: downloaded, or found in the cache; offline, a clear
  error naming ``--weights FILE``); its tokenizer is ``open_clip.get_tokenizer(ARCH)``.
- ``hf:PATH_OR_NAME``: a Hugging Face CLIP (``AutoModel.from_pretrained``) from a local folder
  or the hub, with its tokenizer and image processor (mean, std, size) from the same place.

The prompts are the classes: ``--prompts "a dog,a cat"`` or ``--prompts FILE`` (one a line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.models.weights import is_random, load_state
from camlens.models.zero_shot import ZeroShot, check_prompts, zero_shot

#: spec prefixes of image-text models
PREFIXES = ("open_clip", "hf")


def read_prompts(text: str | Sequence[str] | None) -> list[str] | None:
    """``--prompts``: a file (one prompt a line, blank lines skipped), comma-separated prompts, or
    a list; None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        path = Path(text)
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return check_prompts([line for line in lines if line.strip()])
        return check_prompts([part for part in text.split(",") if part.strip()] or [text])
    return check_prompts(list(text))


def is_clip(spec: str) -> bool:
    """Whether ``spec`` names an image-text model (``open_clip:`` or ``hf:``)."""
    return spec.partition(":")[0] in PREFIXES


def load(spec: str, weights: str | None, prompts: Sequence[str] | None) -> ZeroShot:
    """The zero-shot classifier of ``prompts`` for the image-text model ``spec`` names."""
    kind, _, name = spec.partition(":")
    if not prompts:
        raise CamlensValueError(
            f"model spec {spec!r} is an image-text model, whose classes are text prompts: pass "
            '--prompts "a dog,a cat" or --prompts FILE (one prompt a line)'
        )
    if not name:
        raise CamlensValueError(f"model spec {spec!r} names no model: {kind}:NAME")
    if kind == "open_clip":
        return _open_clip(name, weights, prompts)
    return _hf(name, weights, prompts)


def _needs(module: str, extra: str = "clip") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CamlensValueError(
            f"this model spec needs {module} (pip install 'camlens[{extra}]')"
        ) from error


def _open_clip(arch: str, weights: str | None, prompts: Sequence[str]) -> ZeroShot:
    open_clip = _needs("open_clip")
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise CamlensValueError(f"open_clip has no model {arch!r}{hint}")
    tag = None if is_random(weights) or Path(str(weights)).is_file() else str(weights)
    if tag is not None:
        _download(open_clip, arch, tag)
    model = open_clip.create_model(arch, pretrained=tag)
    if tag is None and not is_random(weights):
        load_state(model, weights)
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as error:  # a tokenizer from the hub, offline
        raise CamlensValueError(
            f"open_clip could not load the tokenizer of {arch} ({type(error).__name__}: "
            f"{str(error)[:200]})"
        ) from error
    return zero_shot(model, prompts, tokenizer=tokenizer)


def _download(open_clip: Any, arch: str, tag: str) -> None:
    """Fetch (or find in the cache) open_clip's pretrained ``tag`` of ``arch``; an unknown tag or
    a failed download is a clear error."""
    config = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    if not config:
        tags = ", ".join(open_clip.pretrained.list_pretrained_tags_by_model(arch)) or "none"
        raise CamlensValueError(
            f"--weights {tag!r} is neither none, a local file nor a pretrained tag of open_clip's "
            f"{arch} (its tags: {tags})"
        )
    try:
        open_clip.pretrained.download_pretrained(config)
    except Exception as error:  # hub and URL errors vary by version
        raise CamlensValueError(
            f"could not download open_clip's {tag} weights of {arch} ({type(error).__name__}: "
            f"{str(error)[:200]}); offline, pass a local state dict: --weights FILE (saved with "
            "torch.save(model.state_dict(), FILE)), or --weights none for random weights"
        ) from error


def _hf(name: str, weights: str | None, prompts: Sequence[str]) -> ZeroShot:
    transformers = _needs("transformers")
    try:
        model = transformers.AutoModel.from_pretrained(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:  # not a folder, not on the hub, offline
        raise CamlensValueError(
            f"could not load the Hugging Face model {name!r} ({type(error).__name__}: "
            f"{str(error)[:200]}); offline, pass a local folder saved with "
            "model.save_pretrained(FOLDER) and tokenizer.save_pretrained(FOLDER)"
        ) from error
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError, ImportError):  # no preprocessor_config.json: the config's size
        processor = None
    if not is_random(weights):
        load_state(model, weights)
    return zero_shot(model, prompts, tokenizer=tokenizer, processor=processor)
