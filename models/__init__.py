"""Generative models p(z) p_θ(x|z): priors, decoders, likelihoods and the Pyro model."""

from models.conditional import ClassConditionalModel
from models.decoders import ConvDecoder, MLPDecoder
from models.hvae import HierarchicalVAEModel
from models.hvae_skip import SkipDecoder, SkipHierarchicalVAEModel
from models.likelihoods import (
    BernoulliImage,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
)
from models.priors import (
    FlowPrior,
    LearnedNormalPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
    vamp_components,
)
from models.vae import VAEModel

__all__ = [
    "ClassConditionalModel",
    "BernoulliImage",
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "ConvDecoder",
    "DiscretizedLogistic",
    "DiscretizedLogisticLikelihood",
    "FlowPrior",
    "GaussianLikelihood",
    "HierarchicalVAEModel",
    "LaplaceLikelihood",
    "LearnedGaussianLikelihood",
    "LearnedNormalPrior",
    "MLPDecoder",
    "MixtureOfGaussiansPrior",
    "SkipDecoder",
    "SkipHierarchicalVAEModel",
    "StandardNormalPrior",
    "VAEModel",
    "VampPrior",
    "vamp_components",
]
