"""Images people look at: sample grids, reconstructions, training curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F
from torchvision.utils import make_grid, save_image

from pyro_vae.checkpoint import write_atomically

# Small images (8x8 digits) are scaled up by whole pixels so a grid is readable.
MIN_DISPLAY_SIZE = 28


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here), imported on use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _upscale(images: torch.Tensor) -> torch.Tensor:
    factor = max(1, MIN_DISPLAY_SIZE // images.shape[-1])
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """``(N, C, H, W)`` images with values in [0, 1] as one ``(C, H', W')`` grid image."""
    return make_grid(_upscale(images.detach().float().cpu().clamp(0, 1)), nrow=nrow, padding=2)


def save_image_grid(
    images: torch.Tensor,
    path: Path,
    nrow: int = 8,
    caption: str | None = None,
    row_labels: list[str] | None = None,
) -> None:
    """Write ``(N, C, H, W)`` images with values in [0, 1] as one PNG grid (atomically);
    with a ``caption`` (above, wrapped) or ``row_labels`` (left of each row), drawn into the
    image, so the file says what it shows wherever it is opened."""
    grid = image_grid(images, nrow)
    if caption is None and row_labels is None:
        write_atomically(path, lambda f: save_image(grid, f, format=_format(path)))
        return
    import textwrap

    plt = _pyplot()
    dpi, height, width = 100, grid.shape[1], grid.shape[2]
    margin = 1.2 if row_labels else 0.1  # inches left for the labels
    lines = textwrap.wrap(caption or "", max(30, int((width / dpi + margin) * 14)))
    top = 0.2 + 0.18 * len(lines)
    fig = plt.figure(figsize=(width / dpi + margin + 0.1, height / dpi + top + 0.1), dpi=dpi)
    inches_wide, inches_high = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes((margin / inches_wide, 0.1 / inches_high,
                       width / dpi / inches_wide, height / dpi / inches_high))  # fmt: skip
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if row_labels:
        rows = -(-images.shape[0] // nrow)
        step = height / rows
        ax.set_yticks([step * (i + 0.5) for i in range(rows)], labels=row_labels[:rows],
                      fontsize=8)  # fmt: skip
        ax.tick_params(left=False)
    if lines:
        fig.text(0.5, 1 - 0.08 / fig.get_figheight(), "\n".join(lines), ha="center", va="top",
                 fontsize=9)  # fmt: skip
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure written atomically: a kill leaves the old image or the new one."""
    write_atomically(path, lambda f: fig.savefig(f, format=_format(path)))


def _format(path: Path) -> str:
    return Path(path).suffix.lstrip(".").lower() or "png"


def reconstruction_rows(
    originals: torch.Tensor, reconstructions: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Originals on odd rows, their reconstructions directly beneath them: the images in
    that order, and the row length."""
    n = originals.shape[0]
    nrow = min(n, 8)
    rows = []
    for start in range(0, n, nrow):
        rows += [originals[start : start + nrow], reconstructions[start : start + nrow]]
    return torch.cat(rows).cpu(), nrow


RECONSTRUCTIONS_CAPTION = "Test images (odd rows) above their reconstructions"


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: Path
) -> None:
    """Originals above their reconstructions, row by row, each row labelled."""
    images, nrow = reconstruction_rows(originals, reconstructions)
    rows = -(-images.shape[0] // nrow)
    labels = ["test image" if i % 2 == 0 else "reconstruction" for i in range(rows)]
    save_image_grid(images, path, nrow=nrow, caption=RECONSTRUCTIONS_CAPTION, row_labels=labels)


def epoch_series(
    history: list[dict], key: str, first: int = 0, last: float = float("inf")
) -> list[tuple[int, float]]:
    """(epoch, ``key``) of the history's rows that hold ``key``, over epochs ``first`` to
    ``last``, in the history's order."""
    return [
        (row["epoch"], row[key])
        for row in history
        if first <= row["epoch"] <= last and row.get(key) is not None
    ]


def save_curves(
    history: list[dict], path: Path, title: str | None = None, objective: str = "ELBO"
) -> None:
    """ELBO per data point against epoch for the train, validation and test columns; beside
    it, where the history holds them, the ELBO's KL term on validation and test images (near
    zero: posterior collapse)."""
    plt = _pyplot()

    def plot(ax, columns: tuple[tuple[str, str], ...]) -> None:
        for key, label in columns:
            points = epoch_series(history, key)
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()

    with_kl = any(row.get(f"{split}_kl") is not None for row in history for split in SPLITS)
    fig, axes = plt.subplots(1, 2 if with_kl else 1, figsize=(10 if with_kl else 6, 4), dpi=120)
    elbo_ax = axes[0] if with_kl else axes
    train = "train" if objective == "ELBO" else f"train: {objective}"
    plot(elbo_ax, (("train_elbo", train), ("valid_elbo", "validation"), ("test_elbo", "test")))
    elbo_ax.set_ylabel("ELBO (nats per image)")
    if with_kl:
        plot(axes[1], (("valid_kl", "validation"), ("test_kl", "test")))
        axes[1].set_ylabel("KL term E_q[log q(z|x) - log p(z)] (nats)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


SPLITS = ("valid", "test")


def save_overlaid_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Several runs' validation ELBO per epoch in one plot (a run without a validation split
    shows its test ELBO, dashed), labelled by the keys of ``histories``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, history in histories.items():
        for key, style, suffix in (("valid_elbo", "-", ""), ("test_elbo", "--", " (test)")):
            points = epoch_series(history, key)
            if points:
                ax.plot(*zip(*points), style, marker="o", markersize=2, label=label + suffix)
                break
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_ylabel("ELBO, nats per image (validation; test where marked)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def running_mean(epochs: list[int], values: list[float], window: int) -> tuple[list, list]:
    """The mean of each ``window`` consecutive values, placed at the last epoch of its
    window (fewer values than ``window``: none)."""
    if len(values) < window:
        return [], []
    sums = torch.tensor(values, dtype=torch.float64).cumsum(0)
    means = (sums[window - 1 :] - torch.cat([sums.new_zeros(1), sums[:-window]])) / window
    return list(epochs[window - 1 :]), means.tolist()


def save_late_curves(
    histories: dict[str, list[dict]],
    path: Path,
    key: str = "test_elbo",
    window: int = 25,
    title: str | None = None,
    quantity: str = "test ELBO",
) -> None:
    """The later half of a run up close, which its whole curve, dominated by the first
    epochs, hides: ``key`` per epoch over the second half of the first history's epochs,
    each run's values faint and their running mean over ``window`` epochs solid. With a
    second history (a run it is measured against), a panel of the first minus the second
    at equal epochs, its running mean likewise: how a lead changes as both train on.
    ``quantity`` names ``key`` on the axes."""
    plt = _pyplot()
    first_history = next(iter(histories.values()))
    last = max(row["epoch"] for row in first_history)
    start = max(1, last // 2)
    series = {label: dict(epoch_series(h, key, start, last)) for label, h in histories.items()}
    labels = list(series)
    pair = len(labels) == 2
    fig, axes = plt.subplots(1, 2 if pair else 1, figsize=(10 if pair else 6, 4), dpi=120)
    ax = axes[0] if pair else axes

    def draw(ax, epochs: list[int], values: list[float], label: str, color: str) -> None:
        each = f"{label}, each epoch"
        ax.plot(epochs, values, color=color, alpha=0.25, linewidth=0.8, label=each)
        mean_epochs, means = running_mean(epochs, values, window)
        ax.plot(mean_epochs, means, color=color, linewidth=2, label=f"{label}, mean of {window}")

    for index, (label, values) in enumerate(series.items()):
        epochs = sorted(values)
        draw(ax, epochs, [values[e] for e in epochs], label, f"C{index}")
    ax.set_ylabel(f"{quantity} (nats per image)")
    if pair:
        mine, theirs = series[labels[0]], series[labels[1]]
        common = sorted(set(mine) & set(theirs))
        difference = [mine[e] - theirs[e] for e in common]
        draw(axes[1], common, difference, f"{labels[0]} − {labels[1]}", "C2")
        axes[1].axhline(0, color="black", linewidth=0.8)
        axes[1].set_ylabel(f"{quantity}: {labels[0]} − {labels[1]} (nats per image)")
    for ax in axes if pair else [axes]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_khat_plot(khat, threshold: float, path: Path) -> None:
    """Pareto k̂ of every data point, sorted, with the reliability threshold marked."""
    plt = _pyplot()
    import numpy as np

    values = np.sort(np.asarray(khat, dtype=float))
    finite = np.where(np.isfinite(values), values, np.nan)
    fig, (ax_sorted, ax_hist) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    ax_sorted.plot(np.arange(len(values)), finite, lw=1)
    ax_sorted.axhline(threshold, color="red", ls="--", label=f"k̂ = {threshold}")
    ax_sorted.set_xlabel("data points, sorted by k̂")
    ax_sorted.set_ylabel("Pareto k̂")
    ax_sorted.legend()
    ax_hist.hist(finite[np.isfinite(finite)], bins=40)
    ax_hist.axvline(threshold, color="red", ls="--")
    ax_hist.set_xlabel("Pareto k̂")
    ax_hist.set_ylabel("data points")
    share = float(np.mean(values > threshold))
    fig.suptitle(f"PSIS k̂ of the importance weights: {share:.1%} above {threshold}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_latent_map(points, labels, path: Path, method: str) -> None:
    """A 2-D embedding of latent means, one colour per label."""
    plt = _pyplot()
    import numpy as np

    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=120)
    for value in np.unique(labels):
        chosen = labels == value
        name = "unlabelled" if value < 0 else str(value)
        ax.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6, label=name)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.legend(markerscale=3, fontsize=8, loc="best", ncol=2)
    ax.set_title(f"Latent means of the test set ({method})")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
