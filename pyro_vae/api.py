"""The notebook-level functions beyond training: log-likelihood, ELBO and visualization of a
trained :class:`~pyro_vae.run.Run`."""

import math
from pathlib import Path

from tqdm.auto import tqdm

from pyro_vae.distributed import SINGLE, ProcessGroup
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import elbo_terms
from pyro_vae.importance import (
    DEFAULT_MAX_ELEMENTS,
    LogLikelihoodEstimate,
    importance_log_likelihood,
)
from pyro_vae.labels import class_conditional, needs_labels
from pyro_vae.latent import write_class_images, write_latent_images
from pyro_vae.report import write_report
from pyro_vae.run import Run


def log_likelihood(
    run: Run,
    split: str = "test",
    num_samples: int = 5000,
    max_images: int | None = None,
    progress: bool = False,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    group: ProcessGroup = SINGLE,
) -> LogLikelihoodEstimate:
    """Importance-sampled log p(x) of the run's model on ``split`` (the first ``max_images``).

    Returns per data point log p̂(x), ELBO, IWAE bounds, PSIS k̂ and ESS, and their summary.
    ``max_elements`` bounds the largest tensor (the memory budget, see
    :func:`~pyro_vae.importance.importance_log_likelihood`); under torchrun, ``group`` shares
    the images out among the ranks, with the same result.
    """
    images, labels = run.data.inputs(split), run.data.split_labels(split)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise UserInputError(f"max_images must be an integer >= 1, got {max_images!r}")
        images, labels = images[:max_images], labels[:max_images]
    shown = progress and group.is_main
    with tqdm(total=images.shape[0], disable=not shown, unit="image", mininterval=0.5) as bar:
        estimate = importance_log_likelihood(
            run.model,
            run.guide,
            images,
            num_samples,
            max_elements=max_elements,
            labels=labels,
            progress=bar.update,
            group=group,
            condition_on_labels=needs_labels(run.model),  # cvae: log p(x|y)
        )
    likelihood = getattr(run.model, "likelihood", None)  # none named in a user pair
    if getattr(likelihood, "discrete", False):  # a probability mass: bits per dim
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
    out_dir = Path(run.run_dir) / "viz"
    if class_conditional(run.model):  # m2, cvae: pictures of p(x | y, z)
        images, summary = write_class_images(run, out_dir)
    else:
        images, summary = write_latent_images(
            run,
            out_dir,
            num_pairs=num_pairs,
            max_dims=max_dims,
            attribute_classes=attribute_classes,
            tsne=tsne,
        )
    return write_report(run, images, summary)


def evaluate(run: Run, split: str = "test") -> float:
    """The run's ELBO on ``split`` in nats per image, under the fixed evaluation seed."""
    return elbo_terms(run.model, run.guide, run.data, split, run.config.eval_batch_size)["elbo"]
