"""Inference on diffusion models: training on the bound K, ancestral sampling, importance-sampled likelihood,
and posterior queries with their samplers. Functions here take models and arrays, never paths.

Training is `fit` (the host loop: minibatches, validation, checkpoints) around `init`, which gives the SVI and
its `TrainState`, and `update`, one pure and jittable SVI step that also says whether it was finite."""

from ._checkpoint import CheckpointError as CheckpointError
from ._likelihood import LikelihoodEstimate as LikelihoodEstimate
from ._likelihood import discrete_bits_per_dim as discrete_bits_per_dim
from ._likelihood import log_likelihood as log_likelihood
from ._posterior import posterior as posterior
from ._psis import KHAT_THRESHOLD as KHAT_THRESHOLD
from ._psis import psis_khat as psis_khat
from ._query import QueryError as QueryError
from ._query import in_data_units as in_data_units
from ._query import observe_exactly as observe_exactly
from ._sample import sample as sample
from ._train import FitResult as FitResult
from ._train import NonFiniteError as NonFiniteError
from ._train import TrainConfig as TrainConfig
from ._train import TrainingInterrupted as TrainingInterrupted
from ._train import TrainState as TrainState
from ._train import fit as fit
from ._train import init as init
from ._train import make_svi as make_svi
from ._train import update as update
from .samplers import NUTS as NUTS
from .samplers import SMC as SMC
from .samplers import AbstractSampler as AbstractSampler
from .samplers import Perturbed as Perturbed
from .samplers import Posterior as Posterior
