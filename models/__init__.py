"""Generative models p(z) p_θ(x|z): priors, decoders, likelihoods and the Pyro model."""

from pyro_vae.models.conditional import ClassConditionalModel
from pyro_vae.models.decoders import ConvDecoder, MLPDecoder
from pyro_vae.models.hvae import HierarchicalVAEModel
from pyro_vae.models.hvae_skip import SkipDecoder, SkipHierarchicalVAEModel
from pyro_vae.models.likelihoods import (
    BernoulliImage,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
)
from pyro_vae.models.priors import (
    FlowPrior,
    LearnedNormalPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
    vamp_components,
)
from pyro_vae.models.vae import VAEModel

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
