"""Variational families q_φ(z|x) as amortized Pyro guides, and their encoders."""

from pyro_vae.guides.base import AmortizedGuide
from pyro_vae.guides.conditional import ClassConditionalGuide, LabelConditionedEncoder
from pyro_vae.guides.diag_normal import DiagNormalGuide
from pyro_vae.guides.encoders import ConvEncoder, MLPEncoder
from pyro_vae.guides.flows import FlowGuide
from pyro_vae.guides.full_normal import FullNormalGuide
from pyro_vae.guides.hierarchical import HierarchicalGuide
from pyro_vae.guides.hierarchical_skip import ImageAndCodeEncoder, SkipHierarchicalGuide
from pyro_vae.guides.lowrank_normal import LowRankNormalGuide
from pyro_vae.guides.mixture import MixtureGuide
from pyro_vae.guides.student_t import StudentTGuide
from pyro_vae.guides.zuko_flows import ZukoFlowGuide, ZukoFlowPrior

__all__ = [
    "ClassConditionalGuide",
    "LabelConditionedEncoder",
    "AmortizedGuide",
    "ConvEncoder",
    "DiagNormalGuide",
    "FlowGuide",
    "FullNormalGuide",
    "HierarchicalGuide",
    "ImageAndCodeEncoder",
    "LowRankNormalGuide",
    "MLPEncoder",
    "MixtureGuide",
    "SkipHierarchicalGuide",
    "StudentTGuide",
    "ZukoFlowGuide",
    "ZukoFlowPrior",
]
