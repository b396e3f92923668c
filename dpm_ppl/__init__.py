"""dpm_ppl: diffusion probabilistic models (Sohl-Dickstein et al., ICML 2015) as NumPyro programs."""

from importlib.metadata import PackageNotFoundError, version

from . import gaussian as gaussian
from . import nn as nn
from . import schedules as schedules
from .bound import BoundTerms as BoundTerms
from .bound import DiffusionELBO as DiffusionELBO
from .chains import ForwardChain as ForwardChain
from .chains import ReverseChain as ReverseChain
from .kernels import (
    GaussianOracle as GaussianOracle,
)
from .kernels import (
    GaussianReverse as GaussianReverse,
)
from .kernels import (
    IsotropicOracle as IsotropicOracle,
)
from .model import GaussianDiffusion as GaussianDiffusion
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
