"""Guides, and a prior, from Zuko's flows (Rozet et al., github.com/probabilists/zuko).

Pyro's documentation says its own flow transforms are no longer developed, in favour of
Zuko, and ``pyro.contrib.zuko.ZukoToPyro`` wraps a Zuko distribution for ``pyro.sample``.

    q_φ(z|x) = a Zuko flow of N(0, I) with context h(x), the encoder's hidden state
    log q(z|x) = log N(u; 0, I) + log |det ∂u/∂z|,   u = the flow's transform of z

- ``zuko-nsf``: neural spline flow (Durkan et al. 2019, "Neural Spline Flows"), monotonic
  rational-quadratic splines in coupling layers (two passes: half the coordinates condition
  the other half): a sample and the density of any code each cost one network pass per
  transform.
- ``zuko-naf``: neural autoregressive flow (Huang et al. 2018, "Neural Autoregressive
  Flows"), used in the inverse-autoregressive direction: a sample and its density cost one
  pass per transform; the density of another code (a VampPrior's components, the STL and
  DReG gradients) inverts the monotonic networks by bisection, slowly.
- prior ``zuko-nsf``: p(z) an unconditional autoregressive spline flow in the masked
  direction (the density of a guide's code costs one pass per transform; sampling, needed
  only for generation, is sequential).

Zuko is an optional extra: ``pip install 'pyro-vae[zuko]'``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.contrib.zuko import ZukoToPyro
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.errors import UserInputError

ZUKO_GUIDES = ("zuko-nsf", "zuko-naf")


def _zuko():
    try:
        import zuko
    except ImportError:
        raise UserInputError(
            "the zuko-* guides and prior need the zuko package: pip install 'pyro-vae[zuko]'"
        ) from None
    return zuko


class ZukoDistribution(ZukoToPyro):
    """``ZukoToPyro`` of a flow with a given batch shape, which Pyro's plates may expand.

    The flow is evaluated with its context broadcast to the batch shape (an unconditional
    flow draws one sample per batch element), so that a particle plate's ``expand`` yields
    the same flow over more draws. Samples come with their log-density (Zuko's
    ``rsample_and_log_prob``), which ``log_prob`` returns for them without recomputation.
    """

    def __init__(self, flow: nn.Module, context: torch.Tensor | None, batch_shape=None):
        self.flow, self.context = flow, context
        if context is None:
            self._batch_shape = torch.Size(batch_shape or ())
            super().__init__(flow())
        else:
            self._batch_shape = torch.Size(batch_shape or context.shape[:-1])
            super().__init__(flow(context.expand(*self._batch_shape, context.shape[-1])))

    @property
    def batch_shape(self) -> torch.Size:
        return self._batch_shape

    def _draw_shape(self, shape) -> tuple[int, ...]:
        # An unconditional flow's distribution has batch shape (): draw the batch as well.
        return tuple(shape) + (tuple(self._batch_shape) if self.context is None else ())

    def __call__(self, shape=()) -> torch.Tensor:
        x, self.cache[x] = self.dist.rsample_and_log_prob(self._draw_shape(shape))
        return x

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self(sample_shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self(sample_shape)

    def expand(self, batch_shape, _instance=None) -> ZukoDistribution:
        return ZukoDistribution(self.flow, self.context, batch_shape)


def _nsf(latent_dim: int, context: int, depth: int, hidden: Sequence[int]) -> nn.Module:
    return _zuko().flows.NSF(
        latent_dim, context, transforms=depth, passes=2, hidden_features=list(hidden)
    )


def _naf_inverse(latent_dim: int, context: int, depth: int, hidden: Sequence[int]) -> nn.Module:
    zuko = _zuko()
    naf = zuko.flows.NAF(
        latent_dim, context, transforms=depth, network={"hidden_features": list(hidden)}
    )
    # The flow samples through transform.inv: inverting the transform puts the networks'
    # cheap direction there.
    return zuko.lazy.Flow(zuko.lazy.LazyInverse(naf.transform), naf.base)


FLOWS = {"zuko-nsf": _nsf, "zuko-naf": _naf_inverse}


class ZukoFlowGuide(AmortizedGuide):
    """q_φ(z|x): one of :data:`FLOWS` with ``depth`` transforms, conditioned on h(x)."""

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        flow: str,
        depth: int,
        hidden_dims: Sequence[int],
    ):
        super().__init__(encoder, latent_dim)
        if latent_dim < 2:
            raise UserInputError(f"the {flow} guide needs --latent-dim 2 or more")
        self.flow = FLOWS[flow](latent_dim, encoder.out_features, depth, hidden_dims)

    def posterior(self, x: torch.Tensor) -> ZukoDistribution:
        return ZukoDistribution(self.flow, self.encoder(x))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The base's mean (zero) pushed through the flow (q's mean has no closed form)."""
        hidden = self.encoder(x)
        q = self.flow(hidden)
        return q.transform.inv(q.base.mean.expand(*hidden.shape[:-1], self.latent_dim))


class ZukoFlowPrior(nn.Module):
    """p(z): N(0, I) through ``depth`` autoregressive spline transforms (Zuko's NSF), in the
    masked direction: a code's density costs one network pass per transform."""

    def __init__(self, latent_dim: int, depth: int, hidden_dims: Sequence[int]):
        super().__init__()
        if latent_dim < 2:
            raise UserInputError("the zuko-nsf prior needs --latent-dim 2 or more")
        self.latent_dim = latent_dim
        self.flow = _zuko().flows.NSF(
            latent_dim, 0, transforms=depth, hidden_features=list(hidden_dims)
        )

    def forward(self, batch_shape) -> ZukoDistribution:
        return ZukoDistribution(self.flow, None, batch_shape)
