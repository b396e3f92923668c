"""Gaussian reverse kernels p(xᵗ⁻¹ | xᵗ) = N(f_μ(xᵗ, t), f_Σ(xᵗ, t)) (paper Eqs 64–65, App. D.2).

A reverse kernel is any callable ``kernel(x_t, t) -> (mean, variance)`` on one example, with ``t``
the paper's step index (2…T; step 1 is the fixed last step). `GaussianReverse` builds one from an
Equinox network; the oracles are exact time reversals used to test the mathematics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from . import gaussian


__all__ = ["GaussianOracle", "GaussianReverse", "IsotropicOracle", "ReverseKernel"]


class ReverseKernel(Protocol):
    """``(x_t, t) -> (mean, variance)``, both of the event shape, for one example."""

    def __call__(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array]: ...


def _mean_reference(x, z, beta_t, var):
    del var
    return jnp.sqrt(1.0 - beta_t) * x + jnp.sqrt(beta_t) * z


def _mean_paper(x, z, beta_t, var):
    del beta_t
    return (x - z) * jnp.sqrt(1.0 - var) + z


_MEANS: dict[str, Callable] = {"reference": _mean_reference, "paper": _mean_paper}


class GaussianReverse(eqx.Module):
    """The reverse kernel of a network: f_μ, f_Σ as perturbations of the forward kernel (App. D.2.1).

    With network outputs ``(z_mu, z_sigma)``:

    - variance: f_Σ = exp(v·log β_t + (1−v)·log β̃_t), v = sigmoid(z_sigma). It lies between the
      forward posterior variance β̃_t and β_t, the paper's entropy bounds on a reverse step
      (§2.6, Eq 24) for unit-variance data, by construction. (Eq 64's σ(z + logit β_t) can leave
      them.)
    - mean, ``mean="reference"`` (default): f_μ = √(1−β_t)·xᵗ + √β_t·z_mu, the reference code's
      form. At z = 0 it is the exact time reversal for isotropic data, and z_mu stays O(1) at
      every noise level (it is a scaled noise prediction), which is what lets a small network
      resolve the Swiss roll's thickness.
    - mean, ``mean="paper"``: Eq 65 with the stationarity correction, f_μ = (xᵗ − z)·√(1−f_Σ) + z,
      where z_mu is the mean of the kernel's equilibrium distribution. Near t = 1 it needs
      z − xᵗ ~ 1/√(1−ᾱ_t), a badly conditioned target.
    """

    network: Callable[[Array, Array], tuple[Array, Array]]
    betas: Float[Array, " T"]
    mean: Literal["reference", "paper"] = eqx.field(static=True, default="reference")

    def __check_init__(self):
        if self.mean not in _MEANS:
            raise ValueError(f"`mean` must be one of {sorted(_MEANS)}, got {self.mean!r}.")

    def variance_bounds(self, t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        """(β̃_t, β_t): the entropy bounds of Eq 24 on the reverse variance."""
        return gaussian.posterior_variance(t, self.betas), self.betas[t - 1]

    def __call__(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        z_mu, z_sigma = self.network(x_t, t)
        lower, upper = self.variance_bounds(t)
        v = jax.nn.sigmoid(z_sigma)
        var = jnp.exp(v * jnp.log(upper) + (1.0 - v) * jnp.log(lower))
        return _MEANS[self.mean](x_t, z_mu, upper, var), var


class IsotropicOracle(eqx.Module):
    """The exact reverse kernel for x⁰ ~ N(0, I): the forward kernel itself, N(√(1−β_t)·xᵗ, β_t).

    N(0, I) is stationary under every forward step, so the chain is reversible and K = L_null.
    """

    betas: Float[Array, " T"]

    def __call__(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        return gaussian.forward_kernel(x_t, self.betas[t - 1])


class GaussianOracle(eqx.Module):
    """Linear-Gaussian reverse kernels: the exact q(xᵗ⁻¹ | xᵗ) for data x⁰ ~ N(m, s²) per coordinate.

    Forward marginals m_t = √(1−β_t)·m_{t−1}, v_t = (1−β_t)·v_{t−1} + β_t. For t ≥ 2 the reverse
    conditional is N(a_t xᵗ + c_t, w_t) with cov_t = √(1−β_t)·v_{t−1}, a_t = cov_t/v_t,
    c_t = m_{t−1} − a_t m_t, w_t = v_{t−1} − cov_t²/v_t. With π = N(0, I) at t = T and the fixed
    last step the model's p(x⁰) is Gaussian in closed form (`marginal_x0`), so the bound's gap,
    importance sampling and posterior queries have exact answers to test against.
    """

    betas: Float[Array, " T"]
    slope: Float[Array, "T d"]
    offset: Float[Array, "T d"]
    variance: Float[Array, "T d"]

    def __init__(self, betas: ArrayLike, mean: ArrayLike, std: ArrayLike):
        b = np.asarray(betas, np.float64)
        mean = np.atleast_1d(np.asarray(mean, np.float64))
        std = np.broadcast_to(np.asarray(std, np.float64), mean.shape)
        m, v = [mean], [std**2]
        for beta in b:
            m.append(np.sqrt(1 - beta) * m[-1])
            v.append((1 - beta) * v[-1] + beta)
        m, v = np.stack(m), np.stack(v)  # index t = 0…T
        cov = np.sqrt(1 - b)[:, None] * v[:-1]
        slope = cov / v[1:]
        self.betas = jnp.asarray(b)
        self.slope = jnp.asarray(slope)  # row t-1 holds step t
        self.offset = jnp.asarray(m[:-1] - slope * m[1:])
        self.variance = jnp.asarray(v[:-1] - cov**2 / v[1:])

    def __call__(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        i = jnp.asarray(t) - 1
        return self.slope[i] * x_t + self.offset[i], self.variance[i]

    def marginal_x0(self) -> tuple[np.ndarray, np.ndarray]:
        """The model's exact p(x⁰) = N(μ₀, σ₀²) per coordinate: push N(0, 1) through steps T…2, then
        the fixed last step p(x⁰|x¹) = N(√(1−β₁)x¹, β₁)."""
        slope, offset, var = (np.asarray(a, np.float64) for a in (self.slope, self.offset, self.variance))
        mu = np.zeros(slope.shape[1])
        s2 = np.ones(slope.shape[1])
        for i in range(slope.shape[0] - 1, 0, -1):
            mu, s2 = slope[i] * mu + offset[i], slope[i] ** 2 * s2 + var[i]
        beta1 = float(self.betas[0])
        return np.sqrt(1 - beta1) * mu, (1 - beta1) * s2 + beta1
