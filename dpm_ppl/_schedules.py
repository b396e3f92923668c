"""Forward-diffusion schedules β₁…β_T (paper §2.4.1, App. D; reference code `generate_beta_arr`).

Every schedule is an `equinox.Module` whose call returns the array ``betas`` of shape ``(T,)``,
where ``betas[t - 1]`` is the paper's β_t. Fixed schedules hold no trainable arrays; the learned
schedule holds logits for β₂…β_T, which SVI trains through the reparameterised forward chain
(the paper's "frozen noise"), while β₁ stays fixed.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


__all__ = [
    "AbstractSchedule",
    "ArraySchedule",
    "GeometricSchedule",
    "HarmonicSchedule",
    "LearnedSchedule",
    "ReferenceSchedule",
    "alpha_bar",
    "one_minus_alpha_bar",
    "validate_betas",
]


def _log_alpha_bar(betas: Float[Array, " T"]) -> Float[Array, " T+1"]:
    return jnp.concatenate([jnp.zeros((1,), betas.dtype), jnp.cumsum(jnp.log1p(-betas))])


def alpha_bar(betas: Float[Array, " T"]) -> Float[Array, " T+1"]:
    """ᾱ_0…ᾱ_T (α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, ᾱ_0 = 1; both families).

    Computed in log space so that long schedules (T = 4000) stay accurate.
    """
    return jnp.exp(_log_alpha_bar(betas))


def one_minus_alpha_bar(betas: Float[Array, " T"]) -> Float[Array, " T+1"]:
    """1 − ᾱ_0…1 − ᾱ_T via expm1: in float32, 1 − ᾱ_t keeps ~3 digits when β₁ ~ 10⁻⁵, this keeps all."""
    return -jnp.expm1(_log_alpha_bar(betas))


def validate_betas(betas: np.ndarray, num_steps: int | None = None, name: str = "betas") -> np.ndarray:
    """Check a concrete schedule: one dimension, finite, every β_t in (0, 1), length T.

    Raises `ValueError` naming the argument, the offending value and the fix.
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array of β_t values (one per diffusion step), got shape {betas.shape}."
        )
    if num_steps is not None and betas.size != num_steps:
        raise ValueError(
            f"`{name}` has length {betas.size} but the diffusion has T = {num_steps} steps; "
            "give exactly one β_t per step."
        )
    bad = np.flatnonzero(~np.isfinite(betas) | (betas <= 0) | (betas >= 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"`{name}` must lie strictly inside (0, 1); β_{i + 1} = {float(betas[i])!r} does not. "
            "A forward step with β = 0 adds no noise and one with β ≥ 1 is not a valid variance."
        )
    return betas


def _check_num_steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(
            f"`num_steps` (T) must be an integer ≥ 1, got {num_steps!r}. "
            "The paper uses T = 40 for the Swiss roll and T = 1000 for images."
        )
    return int(num_steps)


class AbstractSchedule(eqx.Module):
    """A β schedule: ``schedule()`` returns ``betas`` of shape ``(T,)``, with ``betas[t-1] = β_t``."""

    is_learned: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def num_steps(self) -> int:
        """The number of diffusion steps T."""

    @abc.abstractmethod
    def __call__(self) -> Float[Array, " T"]:
        """The schedule β₁…β_T."""


class _FixedSchedule(AbstractSchedule):
    """A schedule given by concrete numbers, stored as a static tuple (never trained)."""

    values: tuple[float, ...] = eqx.field(static=True)

    @property
    def num_steps(self) -> int:
        return len(self.values)

    def __call__(self) -> Float[Array, " T"]:
        return jnp.asarray(self.values, dtype=jnp.result_type(float))


class HarmonicSchedule(_FixedSchedule):
    """β_t = 1 / (T − t + 1): erases a fraction 1/T of the signal per step (paper §2.4.1, footnote 2).

    It ends with β_T = 1, which makes ᾱ_T = 0: x^T carries no trace of x⁰. For the binomial
    family this is the paper's schedule. Since a variance of exactly 1 is outside the open
    interval, the last value is clipped to ``1 - 1e-6`` (for both families): ᾱ_T = 10⁻⁶/T, so
    q(x^T|x⁰) equals π to 10⁻⁶ and a binomial H_q(X^T|X⁰) equals H_p(X^T) to that precision.
    """

    def __init__(self, num_steps: int):
        T = _check_num_steps(num_steps)
        t = np.arange(1, T + 1, dtype=np.float64)
        self.values = tuple(np.minimum(1.0 / (T - t + 1), 1.0 - 1e-6).tolist())


class ReferenceSchedule(_FixedSchedule):
    """The reference code's schedule with its coefficients at zero (repo `generate_beta_arr`).

    β_t = m_t + b_t·(1 − m_t − 10⁻⁵) with baseline b = 1/linspace(T, 2, T), m_t = 10⁻⁶, plus
    ``step1_beta`` (10⁻³) added at t = 1. It ends at β_T ≈ 1/2, leaving ᾱ_T ≈ 1/T.
    """

    def __init__(self, num_steps: int, step1_beta: float = 1e-3):
        T = _check_num_steps(num_steps)
        baseline = 1.0 / np.linspace(T, 2, T)
        floor = np.full(T, 1e-6)
        floor[0] += step1_beta
        self.values = tuple(validate_betas(floor + baseline * (1.0 - floor - 1e-5)).tolist())


class GeometricSchedule(_FixedSchedule):
    """β_t log-spaced from ``beta_min`` (t = 1) to ``beta_max`` (t = T).

    The right start for data with fine structure (the Swiss roll's thickness has variance
    ~10⁻⁵ after scaling): the harmonic schedule's β₂ = 1/(T−1) erases such structure in one step.
    """

    def __init__(self, num_steps: int, beta_min: float = 1e-5, beta_max: float = 0.5):
        T = _check_num_steps(num_steps)
        for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"`{name}` must lie in (0, 1), got {value!r}.")
        if beta_min > beta_max:
            raise ValueError(f"`beta_min` ({beta_min}) must not exceed `beta_max` ({beta_max}).")
        self.values = tuple(np.geomspace(beta_min, beta_max, T).tolist())


class ArraySchedule(_FixedSchedule):
    """A user-given schedule: any T values strictly inside (0, 1)."""

    def __init__(self, betas: Sequence[float] | np.ndarray):
        self.values = tuple(validate_betas(np.asarray(betas)).tolist())


class LearnedSchedule(AbstractSchedule):
    """β₂…β_T learned by gradient ascent on K, β₁ fixed (paper §2.4.1).

    β_t = sigmoid(logit_t) for t ≥ 2, initialised from another schedule. Gradients reach the
    logits through the reparameterised forward chain x^t = √ᾱ_t x⁰ + √(1−ᾱ_t) ε (the paper's
    frozen noise) and through the closed-form posterior, KL and entropy terms.

    **Arguments:**

    - `init`: the schedule to start from; its β₁ becomes the fixed first step.
    """

    is_learned: ClassVar[bool] = True
    logits: Float[Array, " T_minus_1"]
    beta1: float = eqx.field(static=True)

    def __init__(self, init: AbstractSchedule):
        if init.is_learned:
            raise ValueError("`init` must be a fixed schedule (Harmonic, Geometric, Reference or Array).")
        betas = np.asarray(init(), dtype=np.float64)
        self.beta1 = float(betas[0])
        self.logits = jnp.asarray(np.log(betas[1:]) - np.log1p(-betas[1:]), dtype=jnp.result_type(float))

    @property
    def num_steps(self) -> int:
        return self.logits.shape[0] + 1

    def __call__(self) -> Float[Array, " T"]:
        beta1 = jnp.full((1,), self.beta1, dtype=self.logits.dtype)
        return jnp.concatenate([beta1, jax.nn.sigmoid(self.logits)])
