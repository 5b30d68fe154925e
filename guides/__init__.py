"""Variational families q_φ(z|x) as amortized Pyro guides, and their encoders."""

from guides.diag_normal import DiagNormalGuide
from guides.encoders import MLPEncoder

__all__ = ["DiagNormalGuide", "MLPEncoder"]
