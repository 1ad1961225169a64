"""What a run is asked for, as dataclasses that check themselves when they are built.

The command line, ``camlens serve`` and :func:`camlens.runs.distributed.explain` turn their
arguments into these and nothing else, so a word means the same everywhere and is refused with the
same message everywhere:

- :class:`ModelSettings`: the model spec and what :meth:`Session.from_spec` takes besides it;
  ``load()`` is the one place a session is built from words.
- :class:`ExplainSettings`: everything else ``camlens explain`` runs with. Building it checks what
  needs no model (methods, render options, the task, the engine, that ``out`` can take the run);
  :meth:`ExplainSettings.run_settings` checks what needs the model (target, layer, precision).

Checks in the manner of kornia's ``check.py``: one small function per kind of check
(:func:`check_unit`, :func:`check_choice`), messages that name the option and show the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import CamlensValueError, check_choice
from camlens.images.labels import load_class_map
from camlens.runs.local import RunSettings
from camlens.runs.memory import batch_word, choose_batch
from camlens.runs.records import OVERLAY_FORMATS, RenderOptions
from camlens.runs.remote import claim
from camlens.runs.session import LABEL, Session, method_names
from camlens.runs.store import run_folder
from camlens.runs.tasks import TaskSettings, preprocess_for
from camlens.targets import ACTIVATIONS
from camlens.visualize.render import colormap_table

if TYPE_CHECKING:  # the Ray engine imports this module
    from camlens.runs.distributed import Cluster


def check_unit(value: float | None, option: str) -> None:
    """``option``'s ``value`` is None or in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise CamlensValueError(f"{option} must be in [0, 1], got {value}")


def check_render(render: RenderOptions) -> None:
    """The render options can be drawn: a known colormap, opacity and threshold in [0, 1], a known
    overlay format."""
    colormap_table(render.colormap)
    check_unit(render.alpha, "--alpha")
    check_unit(render.threshold, "--threshold")
    check_choice(render.overlay_format, OVERLAY_FORMATS, "--overlay-format")


@dataclass(frozen=True)
class ModelSettings:
    """The model to explain with: the spec (``--model``), ``weights`` (None: ``DEFAULT`` for
    ``torchvision:``/``timm:`` names, random or built-in otherwise), ``preprocess``, the input
    ``size`` (None: the model's own), class-name ``labels`` (a file or a list), ``trust_pickle``,
    the ``seed`` random weights come from, the ``device`` and an image-text model's ``prompts``
    (these four by keyword)."""

    model: str
    weights: str | None = None
    preprocess: str = "auto"
    size: int | None = None
    labels: Any = None
    _: KW_ONLY
    trust_pickle: bool = False
    seed: int = 0
    device: str = "auto"
    prompts: Any = None

    def spec(self) -> dict[str, Any]:
        """:meth:`Session.from_spec`'s keyword arguments but the device (a Ray actor's own)."""
        return {
            "spec": self.model,
            "weights": self.weights,
            "preprocess": self.preprocess,
            "size": self.size,
            "labels": self.labels,
            "trust_pickle": self.trust_pickle,
            "seed": self.seed,
            "prompts": self.prompts,
        }

    def load(self, device: str | None = None) -> Session:
        """The session (the model loaded and checked) on ``device`` (None: :attr:`device`)."""
        return Session.from_spec(**self.spec(), device=device or self.device)


@dataclass(frozen=True)
class ExplainSettings:
    """One ``camlens explain`` run besides its inputs: the ``model``, the run folder ``out``,
    ``methods`` (names, ``"all"`` or comma-separated), the ``target`` word, ``layer``,
    ``precision``, images per forward, how rows are drawn, resume or overwrite, folder labels and
    a ``class_map`` file, the ``task`` with its detection options, and the Ray ``cluster`` (None:
    this process). Built, it has checked everything that needs no model, and that ``out`` can take
    the run (:func:`~camlens.runs.writer.claim`, which touches nothing)."""

    model: ModelSettings
    out: Path | str
    methods: str | Sequence[str] = "gradcam"
    target: str | int | None = "pred"
    activation: str | None = None
    layer: Any = "auto"
    precision: str = "auto"
    batch_size: int | str = 16  # or "auto" (camlens.runs.memory.choose_batch)
    render: RenderOptions = field(default_factory=RenderOptions)
    resume: bool = False
    overwrite: bool = False
    labels_from_folders: bool = False
    class_map: Path | None = None
    task: str = "classify"
    min_score: float = 0.5
    detections: int = 20
    cluster: Cluster | None = None
    decoders: int = 2

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the checked values replace the words
        set_(self, "methods", method_names(self.methods))
        set_(self, "out", run_folder(self.out))
        set_(self, "batch_size", batch_word(self.batch_size))
        check_render(self.render)
        check_unit(self.min_score, "--min-score")
        if self.decoders < 1:
            raise CamlensValueError(f"--decoders must be at least 1, got {self.decoders}")
        if self.activation is not None:
            check_choice(self.activation, ACTIVATIONS, "--activation")
        claim(self.out, resume=self.resume, overwrite=self.overwrite)
        if self.cluster is not None:
            self.cluster.check()
        preprocess = preprocess_for(self.task, self.model.preprocess)  # checks the task
        set_(self, "model", replace(self.model, preprocess=preprocess))
        if self.task != "classify" and self.cluster is not None:
            raise CamlensValueError(
                f"--task {self.task} runs on the local engine; drop --engine ray"
            )
        if self.target == LABEL and self.task != "classify":
            raise CamlensValueError(f"--task {self.task} takes --target pred or a class, not label")
        if self.target == LABEL and not self.labels_from_folders:
            raise CamlensValueError(
                "--target label explains the true class: add --labels-from-folders"
            )
        if self.class_map is not None and not self.labels_from_folders:
            raise CamlensValueError(
                "--class-map names the classes of folders: add --labels-from-folders"
            )

    def session(self) -> Session:
        """The model loaded: on its device, or on the CPU for a Ray driver (the actors load their
        own on the cluster's devices)."""
        return self.model.load("cpu" if self.cluster is not None else None)

    def run_settings(self, session: Session) -> RunSettings:
        """The engines' settings, the target, layer and precision checked against ``session``;
        ``--batch-size auto`` measured on its device."""
        target = session.target(self.target)
        folders = load_class_map(self.class_map) if self.class_map is not None else None
        methods = session.usable(self.methods)
        session.check(methods, self.layer, self.precision)
        return RunSettings(
            methods=methods,
            target=target,
            activation=self.activation,
            layer=self.layer,
            precision=self.precision,
            batch_size=choose_batch(
                self.batch_size,
                session,
                methods,
                self.layer,
                self.precision,
                gpu_actors=self.cluster is not None and self.cluster.gpus_per_worker > 0,
            ),
            render=self.render,
            resume=self.resume,
            labels_from_folders=self.labels_from_folders,
            class_map=folders,
            overwrite=self.overwrite,
            decoders=self.decoders,
        )

    def task_settings(self) -> TaskSettings | None:
        """A detection or segmentation run's own settings (None: classification)."""
        if self.task == "classify":
            return None
        return TaskSettings(self.task, self.min_score, self.detections)
