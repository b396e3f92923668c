"""Samplers of p̃(x⁰) ∝ p(x⁰)·r(x⁰) for `dpm_ppl.posterior`: one small class per sampler."""

from ._base import AbstractSampler as AbstractSampler
from ._nuts import NUTS as NUTS
from ._perturbed import Perturbed as Perturbed
from ._result import Posterior as Posterior
from ._smc import SMC as SMC


SAMPLERS: dict[str, type[AbstractSampler]] = {cls.name: cls for cls in (SMC, NUTS, Perturbed)}
