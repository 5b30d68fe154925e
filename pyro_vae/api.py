"""The notebook-level functions beyond training: log-likelihood, ELBO and visualization of a
trained :class:`~pyro_vae.run.Run`."""

import math
from pathlib import Path

from tqdm.auto import tqdm

from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import elbo_per_datapoint
from pyro_vae.importance import LogLikelihoodEstimate, importance_log_likelihood
from pyro_vae.latent import write_latent_images
from pyro_vae.report import write_report
from pyro_vae.run import Run


def log_likelihood(
    run: Run,
    split: str = "test",
    num_samples: int = 5000,
    max_images: int | None = None,
    progress: bool = False,
) -> LogLikelihoodEstimate:
    """Importance-sampled log p(x) of the run's model on ``split`` (the first ``max_images``).

    Returns per data point log p̂(x), ELBO, IWAE bounds, PSIS k̂ and ESS, and their summary.
    """
    images, labels = run.data.split(split), run.data.split_labels(split)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise UserInputError(f"max_images must be an integer >= 1, got {max_images!r}")
        images, labels = images[:max_images], labels[:max_images]
    with tqdm(total=images.shape[0], disable=not progress, unit="image", mininterval=0.5) as bar:
        estimate = importance_log_likelihood(
            run.model,
            run.guide,
            images.float() / 255,
            num_samples,
            labels=labels,
            progress=bar.update,
        )
    if getattr(run.model.likelihood, "discrete", False):  # a probability mass: bits per dim
        dims = math.prod(images.shape[1:])
        nats = estimate.summary["log_likelihood"]
        estimate.summary["bits_per_dim"] = -nats / (dims * math.log(2))
    return estimate


def visualize(
    run: Run,
    num_pairs: int = 6,
    max_dims: int = 10,
    attribute_classes: tuple[int, ...] = (),
    tsne: bool = False,
) -> Path:
    """Write the latent-space images to ``RUN_DIR/viz/`` and ``RUN_DIR/report.html``.

    Returns the report's path; ``RUN_DIR/viz/latent.json`` holds the active units and the
    per-dimension KL.
    """
    if run.run_dir is None:
        raise UserInputError("visualize needs a run with a run folder (train or load_run)")
    images, summary = write_latent_images(
        run,
        Path(run.run_dir) / "viz",
        num_pairs=num_pairs,
        max_dims=max_dims,
        attribute_classes=attribute_classes,
        tsne=tsne,
    )
    return write_report(run, images, summary)


def evaluate(run: Run, split: str = "test") -> float:
    """The run's ELBO on ``split`` in nats per image, under the fixed evaluation seed."""
    return elbo_per_datapoint(run.model, run.guide, run.data, split, run.config.eval_batch_size)
