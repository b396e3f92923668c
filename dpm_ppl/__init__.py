"""dpm_ppl: diffusion probabilistic models (Sohl-Dickstein et al., ICML 2015) as NumPyro programs."""

from importlib.metadata import PackageNotFoundError, version

from . import gaussian as gaussian, nn as nn, schedules as schedules
from .bound import BoundTerms as BoundTerms, DiffusionELBO as DiffusionELBO
from .chains import ForwardChain as ForwardChain, ReverseChain as ReverseChain
from .kernels import (
    GaussianOracle as GaussianOracle,
    GaussianReverse as GaussianReverse,
    IsotropicOracle as IsotropicOracle,
)
from .model import GaussianDiffusion as GaussianDiffusion
from .schedules import (
    ArraySchedule as ArraySchedule,
    GeometricSchedule as GeometricSchedule,
    HarmonicSchedule as HarmonicSchedule,
    LearnedSchedule as LearnedSchedule,
    ReferenceSchedule as ReferenceSchedule,
)


try:
    __version__ = version("dpm_ppl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
