"""Sanity checks for saliency maps (Adebayo et al. 2018, arXiv:1810.03292).

Cascading model-parameter randomisation: a copy of the model has its parameterised layers
re-initialised one more at a time, from the output down to the input, and the method's maps on
the same images and classes are compared with the original model's after every step. A method
that explains the model should produce maps that move away from the originals; one whose maps
barely change (Guided Backprop, in the paper) mostly shows the image's edges.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlens import targets as targets_
from camlens.errors import CamlensTypeError, CamlensValueError, describe
from camlens.maps import minmax
from camlens.methods._registry import get
from camlens.visualize.figures import new_figure

SSIM_SIZE = 11
SSIM_SIGMA = 1.5


@dataclass
class SanityResult:
    """Similarity of each randomisation step's maps to the original ones.

    ``steps[0]`` is "original"; ``steps[k]`` names the k-th layer re-initialised (layers
    0..k are random at step k). ``spearman``, ``spearman_abs`` and ``ssim`` are (S + 1, B):
    per step and image, the Spearman rank correlation of the signed explanations (see
    :func:`signed_map`), of the maps' absolute values, and the SSIM of the absolute maps scaled to
    [0, 1].
    """

    method: str
    steps: list[str]
    spearman: torch.Tensor
    spearman_abs: torch.Tensor
    ssim: torch.Tensor
    maps: list[torch.Tensor] = field(default_factory=list, repr=False)

    def curves(self) -> dict[str, list[float]]:
        """Mean over images of each measure, per step."""
        return {
            name: getattr(self, name).mean(dim=1).tolist()
            for name in ("spearman", "spearman_abs", "ssim")
        }


def _rank(values: torch.Tensor) -> torch.Tensor:
    """Ranks (0-based, float) of a 1-D tensor, ties given their average rank."""
    ordered, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).float()
    average = ends - (counts.float() + 1) / 2
    ranks = torch.empty_like(ordered, dtype=torch.float32)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Spearman rank correlation (B,) of maps (B, H, W): the Pearson correlation of their ranks
    (ties averaged, as ``scipy.stats.spearmanr``); 0 where a map is constant.

    .. math:: \rho = \frac{\mathrm{cov}(r_a, r_b)}{\sigma_{r_a} \sigma_{r_b}}
    """
    out = torch.zeros(a.shape[0])
    for index in range(a.shape[0]):
        ra = _rank(a[index].reshape(-1).double().cpu()).double()
        rb = _rank(b[index].reshape(-1).double().cpu()).double()
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = ra.norm() * rb.norm()
        out[index] = float((ra * rb).sum() / norm) if norm > 0 else 0.0
    return out


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    r"""Structural similarity (Wang et al. 2004) (B,) of maps (B, H, W): Gaussian window of 11
    taps and sigma 1.5, population covariances, averaged over the window positions fully inside
    the image (``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``).

    .. math:: \mathrm{SSIM} = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
       {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
       \quad C_1 = (0.01 L)^2,\ C_2 = (0.03 L)^2
    """
    if min(a.shape[1:]) < SSIM_SIZE:
        raise CamlensValueError(
            f"SSIM needs maps of at least {SSIM_SIZE}x{SSIM_SIZE} pixels, got {tuple(a.shape[1:])}"
        )
    taps = torch.arange(SSIM_SIZE, dtype=torch.float64) - SSIM_SIZE // 2
    kernel = torch.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    window = (kernel[:, None] * kernel[None, :])[None, None]
    a = a.detach().double().cpu()[:, None]
    b = b.detach().double().cpu()[:, None]

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return index.mean(dim=(1, 2, 3)).float()


def cascade_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters, in reverse order of their first run in a
    forward pass of ``x[:1]``: the cascade's order, from the output down."""
    order: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    handles = []
    training = [(m, m.training) for m in model.modules()]

    def hook(module: nn.Module, args: object, output: object) -> None:
        name = names[module]
        if name not in order:
            order.append(name)

    try:
        for module in model.modules():
            if any(True for _ in module.parameters(recurse=False)):
                handles.append(module.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
    return order[::-1]


def randomise(module: nn.Module) -> None:
    """Re-initialise a module's own parameters: ``reset_parameters()`` where it exists
    (PyTorch's default initialisation; also resets a norm layer's running statistics), else a
    normal draw with each parameter's standard deviation."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
            parameter.normal_(0.0, spread or 1.0)


def signed_map(exp: Any) -> torch.Tensor:
    """The signed (B, H, W) explanation that the paper's "no absolute value" correlation compares:
    the per-pixel attribution summed over channels for pixel-space methods (whose maps are
    magnitudes, e.g. saliency's max |gradient|), the signed map otherwise."""
    attribution = exp.extra.get("attribution")
    return exp.maps if attribution is None else attribution.sum(dim=1)


def sanity_check(
    model: Any,
    x: Any,
    method: str,
    target: targets_.Target = None,
    layer: Any = "auto",
    layers: list[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> SanityResult:
    r"""Cascading model-parameter randomisation test (Adebayo et al. 2018, arXiv:1810.03292).

    ``method`` is any registered name. The maps are the method's maps at the input's resolution
    (``relu=False, normalize=False``; the signed correlation uses :func:`signed_map`, so a
    gradient's sign counts there as in the paper) for the classes the original model explains
    (``target``, default: its prediction). Step k re-initialises ``layers[k]`` (default:
    :func:`cascade_layers`, every parameterised module from the output down) on a copy of the
    model, cumulatively, with the RNG seeded by ``seed``; the model itself is untouched.
    """
    if not isinstance(model, nn.Module):
        raise CamlensTypeError(
            f"sanity_check randomises a torch.nn.Module's parameters, got {describe(model)}"
        )
    explainer = get(method)
    options = {"relu": False, "normalize": False, **options}
    original = explainer(model, layer=layer, **options)(x, target=target)
    targets = original.targets if bool((original.targets >= 0).all()) else target
    reference = original.maps
    signed = [signed_map(original)]
    copied = copy.deepcopy(model)
    names = cascade_layers(copied, x) if layers is None else list(layers)
    modules = dict(copied.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise CamlensValueError(
            f"layers names modules the model does not have: {unknown[:3]}; valid names include "
            f"{cascade_layers(copied, x)[:5]}"
        )
    steps, maps = ["original"], [reference]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            randomise(modules[name])
            steps.append(name)
            exp = explainer(copied, layer=layer, **options)(x, target=targets)
            maps.append(exp.maps)
            signed.append(signed_map(exp))
    scaled = [minmax(m.abs()) for m in maps]
    return SanityResult(
        method=original.method,
        steps=steps,
        spearman=torch.stack([spearman(signed[0], m) for m in signed]),
        spearman_abs=torch.stack([spearman(reference.abs(), m.abs()) for m in maps]),
        ssim=torch.stack([ssim(scaled[0], s) for s in scaled]),
        maps=maps,
    )


def plot_sanity(results: list[SanityResult], path: str | Path) -> Path:
    """Plot each method's mean curves (signed and absolute rank correlation, SSIM) against
    the randomisation steps and save a PNG (needs matplotlib; its backend is left as it is)."""
    figure = new_figure(15, 4.5)
    axes = figure.subplots(1, 3, sharey=True)
    titles = {
        "spearman": "Spearman (signed)",
        "spearman_abs": "Spearman (absolute)",
        "ssim": "SSIM (absolute, scaled)",
    }
    for axis, (key, title) in zip(axes, titles.items()):
        for result in results:
            axis.plot(result.curves()[key], marker="o", markersize=3, label=result.method)
        steps = results[0].steps if results else []
        stride = max(1, len(steps) // 12)
        axis.set_xticks(range(0, len(steps), stride))
        axis.set_xticklabels(steps[::stride], rotation=70, fontsize=7)
        axis.set_title(title)
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.set_xlabel("randomised down to")
    axes[0].set_ylabel("similarity to the original maps")
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
