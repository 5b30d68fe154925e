"""Training the class-conditional models (``pyro_vae.models.conditional``): their batches, the
labelled subset of m2, the m2 objective and the classifier's test error.

The m2 objective (Kingma et al. 2014, "Semi-Supervised Learning with Deep Generative
Models", eqs. 6-9), per step, for a batch of unlabelled images x_u and one of labelled
pairs (x_l, y_l):

    loss = - Σ_u U(x_u) - s [Σ_l L(x_l, y_l) + α Σ_l log q(y_l | x_l)]

    L(x, y) = E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)]
    U(x)    = Σ_y q(y|x) L(x, y) + H(q(y|x))

The labelled batch (B_l images) is drawn every step. How much it weighs is
``--labelled-weighting``:

- ``batch`` (default), s = 1: image for image as much as the unlabelled batch (B_u
  images), as most reimplementations do; with 100 labels beside 59,900 unlabelled images
  each labelled image then weighs 599 times its share of the data set.
- ``data``, s = (N_l / B_l) / (N_u / B_u): an unbiased estimate, up to the constant factor
  B_u / N_u, of Kingma et al.'s objective over the whole training set,
  J^α = Σ_{N_l labelled} (L + α log q(y|x)) + Σ_{N_u unlabelled} U, in which each labelled
  image counts as much as an unlabelled one. Kingma et al.'s code and Pyro's SS-VAE
  example reach the same weighting by spreading the labelled images over an epoch's
  steps. Measured on MNIST (RESULTS.md), it trains the classifier far more slowly: the
  labels' signal is weak beside the unlabelled term, whose entropy H(q(y|x)) pulls q(y|x)
  toward uniform wherever the decoder has not yet learnt to read y.

Each term is a Pyro ELBO of a Pyro program: U is ``TraceEnum_ELBO`` on ``model(x)`` and
``guide(x)``, whose label site the guide marks for parallel enumeration, so the sum over y
is exact; L is the same ELBO on ``model(x, y)`` and ``guide(x, y)``; the classification
term is ``Trace_ELBO`` of a model that observes y under q(y|x) (Pyro's SS-VAE example's
``model_classify``). α defaults to Kingma et al.'s 0.1·N over the labelled count, N the
training images: their 0.1·N multiplies the classification term's mean over the labelled
images (their code weighs each labelled image's log q(y|x) by ``alpha * n_tot / n_labeled``
with alpha = 0.1).

Batches (``pyro_vae.data.TrainingBatches``: all training images, with their labels for
cvae). An m2 epoch is one pass over the unlabelled images; each step adds a batch of
labelled images drawn afresh (without replacement, as many as the batch size, at most all
of them) from the run's permutation stream, so a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.infer
import torch
from torch import nn

from pyro_vae.checkpoint import write_text_atomically
from pyro_vae.config import TrainConfig
from pyro_vae.data import ImageData, TrainingBatches
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import eval_mode
from pyro_vae.labels import classifies, needs_labels
from pyro_vae.run_folder import RunFolder


def has_labels(labels: torch.Tensor) -> bool:
    """Whether a data set's labels are there: an .npz without them gives -1s, or none."""
    return labels.numel() > 0 and not bool((labels < 0).any())


def no_labels_error(dataset: str) -> UserInputError:
    return UserInputError(
        f"{dataset} has no labels (an .npz without train_labels/test_labels arrays?); "
        "the class-conditional models m2 and cvae need a label for every image"
    )


def label_count(labels: torch.Tensor, dataset: str = "the data set") -> int:
    """How many classes the labels of ``dataset`` name, refusing a data set without labels."""
    if not has_labels(labels):
        raise no_labels_error(dataset)
    return int(labels.max()) + 1


def choose_labelled(labels: torch.Tensor, count: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` training images, balanced over the classes (``count // C`` each,
    one more for the first ``count % C``), chosen by ``seed``; sorted."""
    if count < num_classes:
        raise UserInputError(
            f"--labels {count} is fewer than the {num_classes} classes: a balanced labelled "
            f"set needs at least one image per class; use --labels {num_classes} or more"
        )
    if count >= labels.shape[0]:
        raise UserInputError(
            f"--labels {count} leaves no unlabelled image of the {labels.shape[0]} training "
            f"images; use --labels {labels.shape[0] - 1} or fewer"
        )
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        wanted = count // num_classes + (c < count % num_classes)
        if members.shape[0] < wanted:
            raise UserInputError(
                f"--labels {count}: class {c} has {members.shape[0]} training images, fewer "
                f"than the {wanted} a balanced choice takes; use fewer labels"
            )
        chosen.append(members[torch.randperm(members.shape[0], generator=generator)[:wanted]])
    return torch.cat(chosen).sort().values


def write_labelled(folder: RunFolder, index: torch.Tensor, labels: torch.Tensor) -> None:
    """RUN_DIR/labelled.json: which training images kept their label, and the labels."""
    record = {"train_index": index.tolist(), "labels": labels[index].tolist()}
    write_text_atomically(folder.labelled_file, json.dumps(record) + "\n")


@dataclass
class SemiSupervisedBatches(TrainingBatches):
    """m2: (unlabelled images, labelled images, their labels) per step (module docstring)."""

    labelled: torch.Tensor | None = None  # indices into the training split
    labelled_batch: int = 1

    def __post_init__(self) -> None:
        keep = torch.ones(self.data.train.shape[0], dtype=torch.bool)
        keep[self.labelled.cpu()] = False
        self.unlabelled = keep.nonzero().flatten().to(self.data.device)
        self.labelled = self.labelled.to(self.data.device)

    @property
    def size(self) -> int:
        return self.unlabelled.shape[0]

    description = "unlabelled training"

    def program_arguments(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One call's arguments of model and guide: the unlabelled images."""
        return batch[:1]

    def batch(self, index, generator, binarizer, shard):
        device = self.data.device
        draw = torch.randperm(self.labelled.shape[0], generator=generator, device=device)
        labelled = shard(self.labelled[draw[: self.labelled_batch]])
        unlabelled = shard(self.unlabelled[index])
        x_u = self.data.train_batch(unlabelled, binarizer)
        x_l = self.data.train_batch(labelled, binarizer)
        return x_u, x_l, self.data.train_labels[labelled]


def training_batches(
    config: TrainConfig, data: ImageData, model: nn.Module, guide: nn.Module
) -> TrainingBatches:
    """The batches the pair trains on (``pyro_vae.labels``): with a labelled subset chosen by
    seed where the guide classifies (m2), with every image's label where the model is
    p(x | y) (cvae), the images alone otherwise."""
    if classifies(guide):
        num_classes = label_count(data.train_labels, config.dataset)
        labelled = choose_labelled(data.train_labels, config.labels, num_classes, config.seed)
        return SemiSupervisedBatches(
            data, labelled=labelled, labelled_batch=labelled_batch_size(config)
        )
    return TrainingBatches(data, with_labels=needs_labels(model))


def labelled_batch_size(config: TrainConfig) -> int:
    """B_l, the labelled images each m2 step draws: as many as the batch size, at most all."""
    return min(config.batch_size, config.labels)


def labelled_scale(config: TrainConfig, num_train: int) -> float:
    """s, the weight of a step's labelled terms (module docstring): 1 under the ``batch``
    weighting; under ``data`` (N_l / B_l) / (N_u / B_u), which makes each labelled image
    count as much as an unlabelled one."""
    if config.labelled_weighting != "data":
        return 1.0
    labelled, batch = config.labels, config.batch_size
    return (labelled / labelled_batch_size(config)) / ((num_train - labelled) / batch)


def classifier_weight(config: TrainConfig, num_train: int) -> float:
    """α: ``config.classifier_weight``, or Kingma et al.'s 0.1·N on the classification
    term's mean over the labelled images, as a weight on its sum: 0.1·N / labels."""
    if config.classifier_weight is not None:
        return float(config.classifier_weight)
    return 0.1 * num_train / config.labels


def semi_supervised_elbo(config: TrainConfig, num_train: int) -> SemiSupervisedELBO:
    """m2's training objective for ``num_train`` training images."""
    return SemiSupervisedELBO(
        config.num_particles,
        classifier_weight(config, num_train),
        labelled_scale(config, num_train),
    )


class SemiSupervisedELBO(pyro.infer.ELBO):
    """The m2 objective (module docstring) for the model and guide of
    ``pyro_vae.models.conditional``:
    ``differentiable_loss(model, guide, x_unlabelled, x_labelled, y_labelled)``.

    ``classifier_weight`` is α, ``labelled_scale`` s (:func:`labelled_scale`). The label is
    enumerated in parallel at dim -2 (the data plate is dim -1; vectorized particles, where
    asked, at -2 and the label at -3).
    """

    def __init__(
        self, num_particles: int = 1, classifier_weight: float = 1.0, labelled_scale: float = 1.0
    ):
        options = dict(
            num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
        )
        super().__init__(**options)
        self.enumerated = pyro.infer.TraceEnum_ELBO(**options)
        self.labelled = pyro.infer.Trace_ELBO(**options)  # no site to enumerate: y is given
        self.classification = pyro.infer.Trace_ELBO(max_plate_nesting=1)
        self.classifier_weight = classifier_weight
        self.labelled_scale = labelled_scale

    def differentiable_loss(
        self,
        model: Callable,
        guide: Callable,
        unlabelled: torch.Tensor,
        labelled: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        unsupervised = self.enumerated.differentiable_loss(model, guide, unlabelled)
        supervised = self.labelled.differentiable_loss(model, guide, labelled, labels)
        if self.classifier_weight:
            classify = label_likelihood(guide)
            term = self.classification.differentiable_loss(classify, _no_latents, labelled, labels)
            supervised = supervised + self.classifier_weight * term
        return unsupervised + self.labelled_scale * supervised

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("the m2 objective is a sum of three ELBOs' losses")

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def label_likelihood(guide: Callable) -> Callable:
    """The Pyro model ``(x, y) -> None`` observing the labels under the guide's q(y|x): its
    Trace_ELBO is -Σ log q(y|x), the classification term. ``guide`` may be wrapped in
    handlers (a KL warm-up's): they leave an observed site alone."""
    return functools.partial(guide, labels_only=True)


def _no_latents(x: torch.Tensor, y: torch.Tensor) -> None:
    """The guide of :func:`label_likelihood`'s model, which has no latent site."""


@torch.no_grad()
def label_error(guide: nn.Module, data: ImageData, split: str, batch_size: int = 1000) -> float:
    """The share of ``split``'s images whose argmax q(y|x) is not their label."""
    labels = data.split_labels(split)
    wrong = 0
    with eval_mode(guide):
        for x, y in zip(data.eval_batches(split, batch_size), labels.split(batch_size)):
            wrong += int((guide.predict(x) != y).sum())
    return wrong / max(1, labels.shape[0])
