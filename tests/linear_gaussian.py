"""The linear-Gaussian VAE, whose log p(x) and posterior are known exactly.

p(z) = N(0, I_d), p(x|z) = N(Wz + b, σ²I_D), so
    log p(x)  = log N(x; b, WWᵀ + σ²I)
    p(z | x)  = N(Σ Wᵀ(x - b) / σ², Σ),  Σ = (I + WᵀW / σ²)⁻¹
"""

import pyro
import pyro.distributions as dist
import torch
from pyro_vae.models import StandardNormalPrior, VAEModel
from torch import nn

LATENT, PIXELS, SIGMA = 3, 6, 0.5
SHAPE = (1, 1, PIXELS)


class GaussianLikelihood:
    """p(x|z) = N(x; decoder(z), σ²I), for the linear-Gaussian test model only."""

    def __call__(self, loc):
        return dist.Normal(loc, SIGMA).to_event(3)


class LinearGaussian:
    def __init__(self, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.randn(PIXELS, LATENT, generator=generator)
        self.b = torch.randn(PIXELS, generator=generator)
        decoder = nn.Sequential(nn.Linear(LATENT, PIXELS), nn.Unflatten(-1, SHAPE))
        with torch.no_grad():
            decoder[0].weight.copy_(self.W)
            decoder[0].bias.copy_(self.b)
        self.model = VAEModel(StandardNormalPrior(LATENT), decoder, GaussianLikelihood(), SHAPE)
        self.cov_post = torch.linalg.inv(torch.eye(LATENT) + self.W.T @ self.W / SIGMA**2)

    def sample(self, n, seed=1):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, LATENT, generator=generator)
        noise = SIGMA * torch.randn(n, PIXELS, generator=generator)
        return (z @ self.W.T + self.b + noise).reshape(n, *SHAPE)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + SIGMA**2 * torch.eye(PIXELS)
        return dist.MultivariateNormal(self.b, cov).log_prob(x.reshape(-1, PIXELS))

    def posterior_mean(self, x):
        return (x.reshape(-1, PIXELS) - self.b) @ self.W @ self.cov_post.T / SIGMA**2


class GaussianGuide(nn.Module):
    """q(z|x) = N(mean(x) + shift, cov): the exact posterior, or a deliberate distortion."""

    def __init__(self, lg, cov=None, shift=0.0, diagonal=False):
        super().__init__()
        self.lg, self.shift, self.diagonal = lg, shift, diagonal
        self.cov = lg.cov_post if cov is None else cov

    def posterior(self, x):
        loc = self.lg.posterior_mean(x) + self.shift
        if self.diagonal:
            return dist.Normal(loc, self.cov.diagonal().sqrt()).to_event(1)
        return dist.MultivariateNormal(loc, self.cov)

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.posterior(x))
