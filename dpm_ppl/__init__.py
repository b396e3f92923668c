"""dpm_ppl: diffusion probabilistic models (Sohl-Dickstein et al., ICML 2015) as NumPyro programs."""

from importlib.metadata import PackageNotFoundError, version

from . import binomial as binomial
from . import gaussian as gaussian
from . import images as images
from . import nn as nn
from . import schedules as schedules
from .bound import BoundTerms as BoundTerms
from .bound import DiffusionELBO as DiffusionELBO
from .bound import bound_terms as bound_terms
from .chains import ForwardChain as ForwardChain
from .chains import ReverseChain as ReverseChain
from .family import AbstractFamily as AbstractFamily
from .family import BinomialFamily as BinomialFamily
from .family import GaussianFamily as GaussianFamily
from .image_net import ImageNet as ImageNet
from .kernels import BernoulliMixtureOracle as BernoulliMixtureOracle
from .kernels import BernoulliOracle as BernoulliOracle
from .kernels import BinomialReverse as BinomialReverse
from .kernels import GaussianMixtureOracle as GaussianMixtureOracle
from .kernels import (
    GaussianOracle as GaussianOracle,
)
from .kernels import (
    GaussianReverse as GaussianReverse,
)
from .kernels import (
    IsotropicOracle as IsotropicOracle,
)
from .likelihood import LikelihoodEstimate as LikelihoodEstimate
from .likelihood import log_likelihood as log_likelihood
from .model import AbstractDiffusion as AbstractDiffusion
from .model import BinomialDiffusion as BinomialDiffusion
from .model import GaussianDiffusion as GaussianDiffusion
from .posterior import posterior as posterior
from .pretrained import DenoiserKernel as DenoiserKernel
from .query import observe_exactly as observe_exactly
from .sample import sample as sample
from .samplers import NUTS as NUTS
from .samplers import SMC as SMC
from .samplers import AbstractSampler as AbstractSampler
from .samplers import Perturbed as Perturbed
from .samplers import Posterior as Posterior
from .schedules import (
    ArraySchedule as ArraySchedule,
)
from .schedules import (
    GeometricSchedule as GeometricSchedule,
)
from .schedules import (
    HarmonicSchedule as HarmonicSchedule,
)
from .schedules import (
    LearnedSchedule as LearnedSchedule,
)
from .schedules import (
    ReferenceSchedule as ReferenceSchedule,
)


try:
    __version__ = version("dpm_ppl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


# The training and run-folder stack, imported on first use: queries on a model in memory never need it.
_LAZY = {
    "Experiment": "experiment",
    "TrainConfig": "train",
    "fit": "train",
    "fit_experiment": "run",
    "load_run": "run",
}


def __getattr__(name: str):
    """`fit`, `TrainConfig`, `Experiment`, `fit_experiment` and `load_run` (a run folder written by ``dpm fit``)
    are imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dpm_ppl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
