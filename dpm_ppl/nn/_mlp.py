"""Equinox networks for the reverse kernels (paper App. D; reference code `regression.py`, `model.py`).

A network maps one example ``x`` (event shape) and the paper's step index ``t`` (1…T) to two
arrays of the event shape, ``(z_mu, z_sigma)``, which `dpm_ppl.GaussianReverse` turns into
the mean and variance of p(xᵗ⁻¹ | xᵗ), or to one array ``z`` that `dpm_ppl.BinomialReverse`
turns into the Bernoulli rate f_b. Time enters through a temporal readout (Eqs 62–63): the
readout weights are a mixture over a basis of functions of t.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray


__all__ = ["MLPNet", "TemporalBasis", "TemporalReadout"]


class TemporalBasis(eqx.Module):
    """Normalised Gaussian bumps g_j(t) over t ∈ 1…T (paper Eq 63), or one bump per step.

    g_j(t) = exp(−(t−τ_j)²/(2w²)) / Σ_k exp(−(t−τ_k)²/(2w²)), centres τ_j evenly spaced from 1 to T
    and w = ``width`` × their spacing. The paper's Eq 63 uses ``width = 1``; the reference code uses
    1/2. With ``num_basis = T`` and ``per_step=True`` the basis is one-hot: a separate readout for
    every step, as in the paper's Swiss-roll and heartbeat networks.
    """

    num_steps: int = eqx.field(static=True)
    num_basis: int = eqx.field(static=True)
    width: float = eqx.field(static=True)
    per_step: bool = eqx.field(static=True)

    def __init__(self, num_steps: int, num_basis: int = 10, width: float = 1.0, per_step: bool = False):
        if num_steps < 1 or num_basis < 1:
            raise ValueError(f"`num_steps` and `num_basis` must be ≥ 1, got {num_steps} and {num_basis}.")
        self.num_steps = num_steps
        self.num_basis = num_steps if per_step else num_basis
        self.width = width
        self.per_step = per_step

    def __call__(self, t: Int[ArrayLike, ""]) -> Float[Array, " J"]:
        if self.per_step:
            return jax.nn.one_hot(jnp.asarray(t) - 1, self.num_basis)
        if self.num_basis == 1:
            return jnp.ones((1,))
        centres = jnp.linspace(1.0, self.num_steps, self.num_basis)
        w = self.width * (centres[1] - centres[0])
        logits = -((jnp.asarray(t, centres.dtype) - centres) ** 2) / (2.0 * w**2)
        return jax.nn.softmax(logits)


class TemporalReadout(eqx.Module):
    """A linear readout whose weights depend on t through the basis: y = Σ_j g_j(t)·(W_j h + b_j) (Eq 62).

    Initialised at zero, so an untrained kernel is the forward kernel's time reversal for
    isotropic data (`GaussianReverse` with z = 0).
    """

    basis: TemporalBasis
    weight: Float[Array, "J out hidden"]
    bias: Float[Array, "J out"]

    def __init__(self, hidden: int, out: int, basis: TemporalBasis):
        self.basis = basis
        self.weight = jnp.zeros((basis.num_basis, out, hidden))
        self.bias = jnp.zeros((basis.num_basis, out))

    def at(self, t: Int[ArrayLike, ""]) -> tuple[Float[Array, "out hidden"], Float[Array, " out"]]:
        """The readout's weight and bias at step t: Σ_j g_j(t)·(W_j, b_j)."""
        if self.basis.per_step:  # the one-hot mixture is a lookup: O(out·hidden), not O(T·out·hidden)
            i = jnp.asarray(t) - 1
            return self.weight[i], self.bias[i]
        g = self.basis(t)
        return jnp.einsum("j,joh->oh", g, self.weight), g @ self.bias

    def __call__(self, h: Float[Array, " hidden"], t: Int[ArrayLike, ""]) -> Float[Array, " out"]:
        weight, bias = self.at(t)
        return weight @ h + bias


class MLPNet(eqx.Module):
    """A multilayer perceptron for low-dimensional data with a temporal readout.

    The lower layers are shared across t (paper App. D.1); the readout is per step or on the
    bump basis. With ``time_features=True`` the bump features g(t) are also fed to the first
    layer, so the shared layers can specialise by noise level — the paper's networks never see
    t, which costs likelihood on the Swiss roll (see README, "Design").

    **Arguments:**

    - `dim`: the data dimension d (the event shape is ``(dim,)``).
    - `num_steps`: T.
    - `width`, `depth`: hidden units per layer and number of hidden layers.
    - `basis`: the temporal basis of the readout (default: one readout per step).
    - `time_features`: also feed g(t) to the first layer.
    - `activation`: the hidden nonlinearity (paper: tanh for dense layers).
    - `heads`: the number of event-shaped outputs: 2 (default) returns ``(z_mu, z_sigma)`` for a
      Gaussian kernel, 1 returns the single array ``z`` of a binomial kernel. The paper's heartbeat
      network (App. D.1.2) is ``MLPNet(20, T, width=50, depth=3, activation=jax.nn.sigmoid,
      time_features=False, heads=1)``.
    - `key`: a `jax.random` key for initialisation.
    """

    layers: tuple[eqx.nn.Linear, ...]
    readout: TemporalReadout
    time_basis: TemporalBasis | None
    activation: Callable[[Array], Array] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        num_steps: int,
        *,
        width: int = 128,
        depth: int = 3,
        basis: TemporalBasis | None = None,
        time_features: bool = True,
        activation: Callable[[Array], Array] = jax.nn.silu,
        heads: int = 2,
        key: PRNGKeyArray,
    ):
        if heads not in (1, 2):
            raise ValueError(f"`heads` must be 1 (binomial kernels) or 2 (Gaussian kernels), got {heads!r}.")
        basis = basis if basis is not None else TemporalBasis(num_steps, per_step=True)
        self.time_basis = TemporalBasis(num_steps, num_basis=min(num_steps, 16)) if time_features else None
        in_dim = dim + (self.time_basis.num_basis if self.time_basis is not None else 0)
        keys = jax.random.split(key, depth)
        sizes = [in_dim] + [width] * depth
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        self.readout = TemporalReadout(width, heads * dim, basis)
        self.activation = activation
        self.dim = dim
        self.heads = heads

    def __call__(self, x: Float[Array, " dim"], t: Int[ArrayLike, ""]) -> tuple[Array, Array] | Array:
        h = x if self.time_basis is None else jnp.concatenate([x, self.time_basis(t)])
        for layer in self.layers:
            h = self.activation(layer(h))
        out = self.readout(h, t)
        if self.heads == 1:
            return out
        return out[: self.dim], out[self.dim :]
