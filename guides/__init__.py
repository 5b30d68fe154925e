"""Variational families q_φ(z|x) as amortized Pyro guides, and their encoders."""

from guides.base import AmortizedGuide
from guides.conditional import ClassConditionalGuide, LabelConditionedEncoder
from guides.diag_normal import DiagNormalGuide
from guides.encoders import ConvEncoder, MLPEncoder
from guides.flows import FlowGuide
from guides.full_normal import FullNormalGuide
from guides.hierarchical import HierarchicalGuide
from guides.hierarchical_skip import ImageAndCodeEncoder, SkipHierarchicalGuide
from guides.lowrank_normal import LowRankNormalGuide
from guides.mixture import MixtureGuide
from guides.student_t import StudentTGuide
from guides.zuko_flows import ZukoFlowGuide, ZukoFlowPrior

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
