"""`Perturbed`: the paper's perturbed reverse kernels (§2.5.2, Eq 22, App. C Eq 61): fast and biased."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
from jaxtyping import PRNGKeyArray

from ..._checks import positive_int
from .._query import LogR
from ._base import AbstractSampler
from ._particles import run_particles
from ._result import Posterior


__all__ = ["Perturbed"]


class Perturbed(AbstractSampler):
    """Ancestral sampling through the perturbed kernels p(xᵗ⁻¹|xᵗ)·r(xᵗ⁻¹), with r(xᵗ) = r(x⁰) at every
    step (Eq 16), the draws taken as they are.

    The draws are not exact (the product of kernels is not p(x⁰)·r(x⁰)); their importance weights
    against the exact target are still computed, and their ESS and PSIS k̂ measure the bias (k̂ > 0.7:
    do not trust them; use `dpm_ppl.SMC`). log Z is reported from the same weights.

    **Arguments:**

    - `num_particles`: draws per run and datum.
    - `num_runs`: independent runs.
    - `curvature`: add the separable second-order term of log r (exact for Gaussian r of any known
      diagonal scale, the reference code's denoising product); False gives Eq 61 alone.
    """

    name: ClassVar[str] = "perturbed"
    num_particles: int = eqx.field(static=True, default=1_000)
    num_runs: int = eqx.field(static=True, default=4)
    curvature: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        positive_int("num_particles", self.num_particles)
        positive_int("num_runs", self.num_runs)

    def run(self, log_r: LogR, key: PRNGKeyArray, progress: bool = True) -> Posterior:
        return run_particles(
            self.name,
            log_r,
            key,
            num_particles=self.num_particles,
            num_runs=self.num_runs,
            exact=False,
            progress=progress,
            twist="perturbed",
            curvature=self.curvature,
        )
