"""Generative models p(z) p_θ(x|z): priors, decoders, likelihoods and the Pyro model."""

from models.decoders import MLPDecoder
from models.likelihoods import BernoulliImage, BernoulliLikelihood
from models.priors import StandardNormalPrior
from models.vae import VAEModel

__all__ = ["BernoulliImage", "BernoulliLikelihood", "MLPDecoder", "StandardNormalPrior", "VAEModel"]
