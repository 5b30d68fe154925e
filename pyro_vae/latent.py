"""Latent-space tools: what the codes of a trained VAE look like and what they mean.

All functions take a :class:`~pyro_vae.run.Run` (or its model/guide) and return tensors;
:func:`write_latent_images` turns them into the images of ``pyro-vae viz``.

Definitions:

- posterior moments per image: mean and variance of S draws z ~ q(z|x) (exact in the limit
  for every family, whatever its parameterization);
- active units (Burda et al. 2016, "Importance Weighted Autoencoders", section 5.2): latent
  dimension d is active when Cov_x(E_q[z_d | x]) > 0.01;
- average KL per dimension: E_x KL(N(m_d(x), s_d²(x)) || N(μ_d, σ_d²)) with q's and the
  prior's marginals moment-matched by Gaussians (exact for a diagonal-Normal guide and a
  standard normal prior), used to order dimensions by how much they carry;
- spherical interpolation (slerp, Shoemake 1985) follows the great circle between two
  codes, keeping their norm where a Gaussian prior puts its mass (White 2016,
  "Sampling Generative Networks").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyro_vae.checkpoint import write_text_atomically
from pyro_vae.evaluation import EVAL_SEED, eval_mode, fixed_seed
from pyro_vae.labels import label_arguments
from pyro_vae.models.priors import VampPrior

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class LatentStats:
    """Per-image posterior moments of a split, and per-dimension summaries."""

    means: torch.Tensor  # (N, D): E_q[z | x] per image
    variances: torch.Tensor  # (N, D): Var_q[z | x] per image
    activity: torch.Tensor  # (D,): Cov_x(E_q[z_d | x])
    kl_per_dim: torch.Tensor  # (D,): average KL to the prior's marginal
    prior_mean: torch.Tensor  # (D,): E_p[z]
    prior_var: torch.Tensor  # (D,): Var_p[z]

    @property
    def active_units(self) -> int:
        return int((self.activity > ACTIVE_UNIT_THRESHOLD).sum())

    @property
    def order(self) -> torch.Tensor:
        """Dimensions by decreasing average KL."""
        return torch.argsort(self.kl_per_dim, descending=True)


@torch.no_grad()
def posterior_moments(
    guide: nn.Module,
    images: torch.Tensor,
    num_draws: int = 64,
    batch_size: int = 500,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Mean and variance of q(z|x) per image (q(z|x,y) given ``labels``: the class-
    conditional models), and whether they are exact.

    Exact where the family knows its moments (Gaussians, Student-t, the mixture's mean via
    ``guide.code``); otherwise (flows) the moments of ``num_draws`` draws.
    """
    means, variances, exact = [], [], True
    with fixed_seed(EVAL_SEED, images.device):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            given = () if labels is None else (labels[start : start + batch_size],)
            q = guide.posterior(x, *given)
            try:
                means.append(q.mean)
                variances.append(q.variance)
            except NotImplementedError:
                draws = q.sample((num_draws,))
                means.append(draws.mean(0))
                variances.append(draws.var(0))
                exact = False
    return torch.cat(means), torch.cat(variances), exact


@torch.no_grad()
def latent_stats(
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    num_draws: int = 64,
    labels: torch.Tensor | None = None,
) -> LatentStats:
    means, variances, exact = posterior_moments(guide, images, num_draws, labels=labels)
    activity = means.var(0)
    if not exact:
        # A mean of S draws carries Var_q/S of noise, which would make collapsed units look
        # active (1/S > 0.01 for S < 100): subtract its average to keep the estimate unbiased.
        activity = (activity - variances.mean(0) / num_draws).clamp_min(0)
    prior_mean, prior_var = prior_moments(model)
    # KL(N(m, v) || N(μ, s)) = ½ [log(s/v) + (v + (m-μ)²)/s - 1], per image and dimension
    kl = 0.5 * (
        torch.log(prior_var / variances.clamp_min(1e-12))
        + (variances + (means - prior_mean) ** 2) / prior_var
        - 1
    )
    return LatentStats(means, variances, activity, kl.mean(0), prior_mean, prior_var)


@torch.no_grad()
def prior_moments(model: nn.Module, num_draws: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of p(z): exact where the prior knows them, else from draws."""
    prior = model.prior(())
    try:
        return prior.mean, prior.variance
    except NotImplementedError:
        with fixed_seed(EVAL_SEED, prior.sample().device):
            draws = prior.sample((num_draws,))
        return draws.mean(0), draws.var(0)


def lerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes from a to b on the straight line: (steps, D)."""
    t = torch.linspace(0, 1, steps, device=a.device).unsqueeze(-1)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes from a to b along the great circle (lerp where a ∥ b): (steps, D)."""
    t = torch.linspace(0, 1, steps, device=a.device).unsqueeze(-1)
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return lerp(a, b, steps)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def traversal_codes(
    center: torch.Tensor, dims: torch.Tensor, scale: torch.Tensor, steps: int = 9, span: float = 3.0
) -> torch.Tensor:
    """For each dimension d in ``dims``, ``steps`` codes moving z_d over ±span·scale_d from
    ``center``: (len(dims) * steps, D), one row of the grid per dimension."""
    offsets = torch.linspace(-span, span, steps, device=center.device)
    codes = center.repeat(len(dims) * steps, 1)
    for row, d in enumerate(dims.tolist()):
        codes[row * steps : (row + 1) * steps, d] = center[d] + offsets * scale[d]
    return codes


def pca_2d(points: torch.Tensor) -> np.ndarray:
    """The first two principal components of ``points`` (N, D) -> (N, 2)."""
    centered = points - points.mean(0)
    _, _, vh = torch.linalg.svd(centered.double(), full_matrices=False)
    return (centered.double() @ vh[:2].T).cpu().numpy()


def attribute_vector(means: torch.Tensor, has_attribute: torch.Tensor) -> torch.Tensor:
    """Mean code of the images with an attribute minus the mean code of those without."""
    if has_attribute.all() or not has_attribute.any():
        raise ValueError("an attribute vector needs images with and without the attribute")
    return means[has_attribute].mean(0) - means[~has_attribute].mean(0)


def stroke_thickness(images: torch.Tensor) -> torch.Tensor:
    """Ink per image: the mean pixel value, a measurable stand-in for stroke thickness."""
    return images.flatten(1).mean(1)


def extremes(values: torch.Tensor, share: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """(which images are in the top or bottom ``share`` of ``values``, which are in the top)."""
    low, high = torch.quantile(values, share), torch.quantile(values, 1 - share)
    return (values <= low) | (values >= high), values >= high


def write_latent_summary(stats: LatentStats, out_dir: Path) -> dict:
    """``out_dir/latent.json``: the active units and per-dimension KL and activity."""
    summary = {
        "latent_dim": int(stats.means.shape[1]),
        "active_units": stats.active_units,
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "dimensions_by_kl": stats.order.tolist(),
        "kl_per_dim": stats.kl_per_dim.tolist(),
        "activity_per_dim": stats.activity.tolist(),
        "num_test_images": int(stats.means.shape[0]),
    }
    write_text_atomically(out_dir / "latent.json", json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class Figures:
    """The images one ``pyro-vae viz`` writes into ``out_dir``, by caption."""

    out_dir: Path
    written: dict[str, Path] = field(default_factory=dict)

    def path(self, caption: str, name: str) -> Path:
        """Where the figure ``caption`` goes (and is recorded under)."""
        self.written[caption] = self.out_dir / name
        return self.written[caption]

    def grid(
        self,
        caption: str,
        name: str,
        rows: list[torch.Tensor],
        nrow: int,
        row_labels: list[str] | None = None,
    ) -> None:
        """``rows`` as one grid in ``name``, the caption (and row labels) drawn into it."""
        from pyro_vae.plots import save_image_grid

        save_image_grid(torch.cat(rows), self.path(caption, name), nrow, caption, row_labels)

    def reconstructions(self, images: torch.Tensor, recons: torch.Tensor) -> None:
        from pyro_vae.plots import RECONSTRUCTIONS_CAPTION, save_reconstructions

        path = self.path(RECONSTRUCTIONS_CAPTION, "reconstructions.png")
        save_reconstructions(images, recons, path)

    def latent_map(self, caption: str, points, labels: torch.Tensor, method: str) -> None:
        from pyro_vae.plots import save_latent_map

        name = f"latent_{method.lower().replace('-', '')}.png"
        save_latent_map(points, labels, self.path(caption, name), method)


@torch.no_grad()
def write_latent_images(
    run,
    out_dir: Path,
    num_pairs: int = 6,
    steps: int = 10,
    max_dims: int = 10,
    attribute_classes: tuple[int, ...] = (),
    tsne: bool = False,
) -> tuple[dict[str, Path], dict]:
    """The images of ``pyro-vae viz`` in ``out_dir``: ({caption: path}, JSON summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model, guide, data = run.model, run.guide, run.data
    images, labels = data.inputs("test"), data.test_labels
    figures = Figures(out_dir)
    with eval_mode(model, guide):
        stats = latent_stats(model, guide, images)
        prior_figures(figures, model, images.device)
        figures.reconstructions(images[:32], model.reconstruct(guide, images[:32]))
        interpolation_figures(figures, model, guide, images, num_pairs, steps)
        dims = stats.order[:max_dims]
        codes = traversal_codes(stats.prior_mean, dims, stats.prior_var.sqrt(), steps=9)
        caption = (
            f"Traversals from the prior mean, ±3 prior standard deviations, one row per "
            f"latent dimension by decreasing average KL: {dims.tolist()}"
        )
        rows = [f"z[{d}]" for d in dims.tolist()]
        figures.grid(caption, "traversals.png", [model.decode_mean(codes)], 9, rows)
        maps = {"PCA": pca_2d(stats.means)}
        if tsne:
            from sklearn.manifold import TSNE

            means = stats.means.cpu().numpy()
            maps["t-SNE"] = TSNE(2, init="pca", random_state=0).fit_transform(means)
        for method, points in maps.items():
            caption = f"Latent means of the test set coloured by label ({method})"
            figures.latent_map(caption, points, labels, method)
        attribute_figures(figures, model, guide, images, labels, stats, attribute_classes)
    return figures.written, write_latent_summary(stats, out_dir)


def prior_figures(figures: Figures, model: nn.Module, device: torch.device) -> None:
    """64 draws from the prior, as decoder means and as sampled pixels, and a VampPrior's
    pseudo-inputs (what its mixture's components are centred on)."""
    with fixed_seed(EVAL_SEED, device):
        codes = model.prior(()).sample((64,))
        means = model.decode_mean(codes)
        figures.grid("Samples from the prior: decoder means", "samples.png", [means], 8)
        pixels = model.decode(codes).sample()
        figures.grid("Samples from the prior: sampled pixels", "samples_pixels.png", [pixels], 8)
    prior = getattr(model, "prior", None)
    if isinstance(prior, VampPrior):
        pseudo_inputs = prior.inputs()
        caption = f"The first 64 of the {len(pseudo_inputs)} pseudo-inputs of the VampPrior"
        figures.grid(caption, "pseudo_inputs.png", [pseudo_inputs[:64]], 8)


def interpolation_figures(
    figures: Figures,
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    num_pairs: int,
    steps: int,
) -> None:
    """Pairs of test images and the decoded path between their codes, straight and along
    the great circle."""
    for name, path in (("linear", lerp), ("spherical", slerp)):
        rows = []
        for i in range(min(num_pairs, images.shape[0] // 2)):
            a, b = images[2 * i : 2 * i + 1], images[2 * i + 1 : 2 * i + 2]
            rows += [a, model.decode_mean(path(guide.code(a)[0], guide.code(b)[0], steps)), b]
        caption = f"Interpolation between pairs of test images in latent space, {name}"
        figures.grid(caption, f"interpolation_{name}.png", rows, steps + 2)


def attribute_figures(
    figures: Figures,
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    stats: LatentStats,
    attribute_classes: tuple[int, ...],
) -> None:
    """Attribute vectors (stroke thickness, and each class asked for) added to the codes of
    eight test images in seven steps."""
    everyone = torch.ones_like(labels, dtype=torch.bool)
    attributes = {"stroke thickness": extremes(stroke_thickness(images))}
    attributes.update({f"class {c}": (everyone, labels == c) for c in attribute_classes})
    alphas = torch.linspace(-1.5, 1.5, 7, device=images.device)[:, None]
    base = images[:8]
    for name, (keep, has) in attributes.items():
        vector = attribute_vector(stats.means[keep], has[keep])
        rows = [
            torch.cat([x[None], model.decode_mean(c + alphas * vector)])
            for x, c in zip(base, guide.code(base))
        ]
        caption = (
            f"Attribute vector '{name}' (mean code with it minus mean code without), added "
            "in steps -1.5 ... +1.5 to test images (first column: the image)"
        )
        figures.grid(caption, f"attribute_{name.replace(' ', '_')}.png", rows, 8)


@torch.no_grad()
def write_class_images(run, out_dir: Path) -> tuple[dict[str, Path], dict]:
    """The images of ``pyro-vae viz`` for a class-conditional model (m2, cvae) in
    ``out_dir``: samples per class, analogies, reconstructions and the latent map, and the
    active units of q(z | x, y) at the test labels. Returns ({caption: path}, summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model, guide, data = run.model, run.guide, run.data
    classes = model.num_classes
    figures = Figures(out_dir)
    with eval_mode(model, guide):
        images, labels = data.inputs("test"), data.test_labels
        stats = latent_stats(model, guide, images, labels=labels)
        with fixed_seed(EVAL_SEED, images.device):
            caption = (
                "Samples per class: row y shows E[x | y, z], one z ~ p(z) per column shared "
                "down the column (one style, every class)"
            )
            figures.grid(caption, "class_samples.png", [model.class_samples(10)], 10,
                     [f"y = {y}" for y in range(classes)])  # fmt: skip
        caption = (
            "Analogies (Kingma et al. 2014, fig. 1): a test image (first column), then its "
            "code z = q's mean at its label, decoded under every class 0, 1, ..."
        )
        base, base_labels = images[:10], labels[:10]
        codes = guide.code(base, base_labels)  # (10, D): the style of each image
        every_class = torch.arange(classes, device=images.device)[:, None]
        decoded = model.decode_mean(codes[None], every_class).transpose(0, 1)  # (10, C, ...)
        rows = [torch.cat([base[:, None], decoded], 1).flatten(0, 1)]
        figures.grid(caption, "analogies.png", rows, classes + 1)
        given = label_arguments(model, labels[:32])
        figures.reconstructions(images[:32], model.reconstruct(guide, images[:32], *given))
        caption = "Latent means of q(z | x, y) at the test labels, coloured by label (PCA)"
        figures.latent_map(caption, pca_2d(stats.means), labels, "PCA")
    return figures.written, write_latent_summary(stats, out_dir)
