"""Log-likelihood by importance sampling over forward trajectories (paper §2.3, Eqs 6–9).

The model's density is an expectation over forward trajectories (Eq 9):

    p(x⁰) = E_{q(x¹…ᵀ|x⁰)}[ w ],   log w = log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰)
          = log π(xᵀ) + Σ_{t=2}^{T} [log p(xᵗ⁻¹|xᵗ) − log q(xᵗ|xᵗ⁻¹)] + log π(x⁰) − log π(x¹),

the last two terms being the fixed last step (App. B.2). With M forward trajectories per datum,

    log p̂(x⁰) = logsumexp_m(log w_m) − log M,

whose expectation is ≥ E[log w] = K(x⁰) (Jensen, Eq 11 → Eq 12) and increases with M to log p(x⁰).
One log weight is exactly `bound_terms(..., estimator="trajectory").K` (teacher forcing: the
reverse log-probabilities of a drawn trajectory are evaluated in parallel over t), for either
kernel family.

Trajectories are processed in chunks by a `lax.scan` that carries only running statistics (the
running max log w, the mean and squared deviations of the rescaled weights, Σ log w) and the
⌊3√M⌋ + 1 largest log weights that PSIS reads, so device memory is set by the chunk size, the batch
size and T, not by M. Every trajectory has its own key, ``fold_in(fold_in(key, i), m)`` for datum
``i`` and trajectory ``m``, so results do not depend on the chunk or batch sizes. Each batch of data
is split over this process's devices (a 1-axis mesh), every device running its data's trajectories.

Diagnostics: the effective sample size of the weights (Σw)²/Σw², the delta-method standard error of
log p̂, and the PSIS Pareto k̂ of the weights' right tail (`psis_khat`; k̂ > 0.7 means the estimate is
unreliable). `dpm_ppl.arviz.likelihood_datatree` stores them in an ArviZ DataTree.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from .._bound import bound_terms
from .._checks import positive_int
from .._family import AbstractFamily
from .._kernels import ReverseKernel
from .._model import AbstractDiffusion
from ._psis import khat_from_top, num_top
from ._sharding import data_mesh, replicate_arrays


__all__ = [
    "LikelihoodEstimate",
    "discrete_bits_per_dim",
    "log_likelihood",
    "log_weights",
]

LN2 = math.log(2.0)


class LikelihoodEstimate(NamedTuple):
    """Per-datum results of `log_likelihood`, in nats; every array has shape ``(num_data,)``.

    - `log_p_hat`: the importance-sampling estimate log p̂(x⁰) = logsumexp_m log w_m − log M (Eq 9).
    - `stderr`: its delta-method standard error sd(w)/(√M·mean(w)) (ddof = 1; NaN when M = 1).
    - `ess`: the effective sample size of the weights, (Σw)²/Σw², between 1 and M.
    - `khat`: the PSIS Pareto k̂ of the weights' right tail, tied log weights (discrete weights)
      spread first (`psis_khat`); NaN when M < 25, too few for a tail fit, or when the fit fails;
      −inf for a tail constant to working precision.
    - `K`: the bound K(x⁰) = mean_m log w_m (Eq 12) from the same weights.
    - `log_null`: log π(x⁰), the null model; its mean over data is L_null (Table 1).
    - `num_trajectories`: M. `dim`: d, the dimension of one example.
    """

    log_p_hat: np.ndarray
    stderr: np.ndarray
    ess: np.ndarray
    khat: np.ndarray
    K: np.ndarray
    log_null: np.ndarray
    num_trajectories: int
    dim: int

    def bits(self) -> dict[str, np.ndarray]:
        """log p̂, its standard error, K, L_null and the gains over L_null per example, in bits."""
        out = {
            "loglik_is": np.asarray(self.log_p_hat) / LN2,
            "loglik_is_stderr": np.asarray(self.stderr) / LN2,
            "K": np.asarray(self.K) / LN2,
            "log_null": np.asarray(self.log_null) / LN2,
        }
        out["loglik_is_minus_Lnull"] = out["loglik_is"] - out["log_null"]
        out["K_minus_Lnull"] = out["K"] - out["log_null"]
        return out

    def bits_per_dim(self) -> dict[str, np.ndarray]:
        """`bits` divided by the dimension d (bits per dimension; the sign is a log-likelihood's)."""
        return {name: value / self.dim for name, value in self.bits().items()}


def discrete_bits_per_dim(
    log_p: Float[Array, "..."] | np.ndarray | float, dim: int, scale: float | np.ndarray, bin_width: float = 1.0 / 256
) -> np.ndarray:
    """The discrete negative log-likelihood in bits per dimension of quantised data ("Scale caveat").

    For data quantised into bins of width ``bin_width`` (in raw data units; 1/256 for 8-bit values
    in [0, 1]), dequantised with uniform noise and standardised as z = (x − shift)/``scale``
    (`dpm_ppl.datasets.Standardiser`), a density log p_z(z) (nats, per example, e.g. log p̂ or K) gives

        bits/dim = −log₂ p_z(z)/d + log₂(scale) − log₂(bin_width)
                 = 8 − log₂(s) − log₂ p_z(z)/d   for 8-bit data in [0, 1] and s = 1/scale,

    since log p_x(x) = log p_z(z) − d·log(scale) and P(bin) ≥ bin_width^d·exp E[log p_x] (Jensen
    over the dequantisation noise). Averaged over dequantised data this is an upper bound on the
    discrete bits/dim that DDPM (3.70) and VDM (2.65) report; it is lower-is-better, unlike K.
    """
    log_p = np.asarray(log_p, np.float64)
    return -log_p / (dim * LN2) + math.log2(scale) - math.log2(bin_width)


def _model_pieces(diffusion: AbstractDiffusion, x0: np.ndarray | Array) -> tuple[Array, ReverseKernel, np.ndarray]:
    """The schedule, the reverse kernel and the validated data of a bound model or an oracle."""
    if not isinstance(diffusion, AbstractDiffusion):
        raise TypeError(
            f"`diffusion` must be a dpm_ppl.GaussianDiffusion or BinomialDiffusion, got {type(diffusion).__name__}."
        )
    if diffusion.trainable and (diffusion.network is not None or diffusion.schedule.is_learned):
        raise ValueError(
            "`diffusion` has trainable parameters that are not bound: evaluate `diffusion.bind(params)` "
            "(e.g. `dpm_ppl.load_run(RUN).diffusion`), or a model with a fixed `kernel=`."
        )
    x0 = diffusion.family.check_data(x0, diffusion.event_shape, "x0")
    betas = diffusion.betas()
    return betas, diffusion.reverse_kernel(betas), x0


def _one_log_weight(
    key: PRNGKeyArray, x0: Array, betas: Array, kernel: ReverseKernel, event_ndim: int, family: AbstractFamily
) -> Array:
    """log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰) for one datum and one forward trajectory drawn with ``key`` (Eq 9)."""
    return bound_terms(key, x0[None], betas, kernel, event_ndim, "trajectory", family=family).K[0]


def _chunk_log_weights(
    kernel: ReverseKernel,
    betas: Array,
    data_keys: Array,
    x0: Array,
    first: Array,
    size: int,
    event_ndim: int,
    family: AbstractFamily,
) -> Array:
    """Log weights of trajectories ``first … first + size − 1`` of every datum: shape ``(batch, size)``."""
    ms = first + jnp.arange(size)

    def per_datum(k, x):
        keys = jax.vmap(lambda m: jax.random.fold_in(k, m))(ms)
        return jax.vmap(lambda kk: _one_log_weight(kk, x, betas, kernel, event_ndim, family))(keys)

    return jax.vmap(per_datum)(data_keys, x0)


@eqx.filter_jit
def _streamed(
    kernel: ReverseKernel,
    betas: Array,
    data_keys: Array,
    x0: Array,
    num_trajectories: int,
    chunk_size: int,
    event_ndim: int,
    family: AbstractFamily,
) -> tuple[Array, ...]:
    """Scan over trajectory chunks carrying, per datum, the running max log w, the mean and the sum of
    squared deviations of w·exp(−max) (Chan et al.'s pairwise merge: no cancellation when the weights
    are nearly equal), Σ log w and the largest log weights."""
    M, C = num_trajectories, chunk_size
    batch = x0.shape[0]
    n_top = num_top(M)

    def body(carry, j):
        peak, mean, m2, total, top = carry
        lw = _chunk_log_weights(kernel, betas, data_keys, x0, j * C, C, event_ndim, family)
        valid = (j * C + jnp.arange(C)) < M
        lw = jnp.where(valid, lw, -jnp.inf)
        new_peak = jnp.maximum(peak, lw.max(-1))
        ref = jnp.where(jnp.isfinite(new_peak), new_peak, 0.0)
        shift = jnp.where(jnp.isfinite(peak), jnp.exp(peak - ref), 0.0)
        w = jnp.exp(lw - ref[:, None])
        n_a = jnp.minimum(j * C, M).astype(x0.dtype)
        n_b = valid.sum().astype(x0.dtype)
        mean_b = w.sum(-1) / n_b
        m2_b = jnp.where(valid, (w - mean_b[:, None]) ** 2, 0.0).sum(-1)
        mean_a, m2_a = mean * shift, m2 * shift**2
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / (n_a + n_b)
        m2 = m2_a + m2_b + delta**2 * n_a * n_b / (n_a + n_b)
        total = total + jnp.where(valid, lw, 0.0).sum(-1)
        top = jax.lax.top_k(jnp.concatenate([top, lw], axis=-1), n_top)[0]
        return (new_peak, mean, m2, total, top), None

    zeros = jnp.zeros((batch,), x0.dtype)
    init = (jnp.full((batch,), -jnp.inf, x0.dtype), zeros, zeros, zeros, jnp.full((batch, n_top), -jnp.inf, x0.dtype))
    (peak, mean, m2, total, top), _ = jax.lax.scan(body, init, jnp.arange(-(-M // C)))
    log_p_hat = peak + jnp.log(mean)
    rel_var = m2 / M / mean**2  # var(w)/mean(w)², ddof = 0
    ess = M / (1.0 + rel_var)  # = (Σw)²/Σw²
    stderr = jnp.sqrt(m2 / (M - 1) / M) / mean if M > 1 else jnp.full_like(mean, jnp.nan)
    return log_p_hat, stderr, ess, total / M, top


def _data_keys(key: PRNGKeyArray, indices: np.ndarray) -> Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(indices))


def log_likelihood(
    diffusion: AbstractDiffusion,
    x0: Float[Array, "num_data *event"] | np.ndarray,  # noqa: F821 (jaxtyping dimension names)
    key: PRNGKeyArray,
    *,
    num_trajectories: int = 1_000,
    chunk_size: int = 128,
    batch_size: int = 64,
    progress: bool = False,
) -> LikelihoodEstimate:
    """Estimate log p(x⁰) per datum by importance sampling over M forward trajectories (paper Eqs 6–9).

    **Arguments:**

    - `diffusion`: a bound model of either family (`.bind(params)`, or `load_run(RUN).diffusion`)
      or one with a fixed ``kernel=`` (the oracles of `dpm_ppl`).
    - `x0`: standardised data, shape ``(num_data, *event_shape)``.
    - `key`: a `jax.random` key; datum ``i``'s trajectory ``m`` uses ``fold_in(fold_in(key, i), m)``.
    - `num_trajectories`: M ≥ 1 forward trajectories per datum (M = 1 gives a one-sample K).
    - `chunk_size`: trajectories per datum evaluated at once; with `batch_size` and T it sets the
      memory, ~ batch_size·chunk_size·T·(d + network width) floats, independent of M.
    - `batch_size`: data per compiled call (the progress bar advances by batch), rounded up to a
      multiple of the number of local devices: each batch is split over them (data parallel).
    - `progress`: show a tqdm progress bar over data batches.
    """
    M = positive_int("num_trajectories", num_trajectories, "Use M ≥ 1 trajectories per datum (e.g. 1000).")
    C = min(positive_int("chunk_size", chunk_size, "Use e.g. 128 trajectories per chunk."), M)
    B = positive_int("batch_size", batch_size, "Use e.g. 64 data per batch.")
    betas, kernel, x0 = _model_pieces(diffusion, x0)
    n = x0.shape[0]
    mesh = data_mesh(jax.local_devices())
    by_datum = mesh.split
    B = -(-min(B, n) // mesh.size) * mesh.size  # a whole number of data per device
    kernel, betas = replicate_arrays((kernel, betas), mesh.replicated)
    parts = []
    for start in tqdm(range(0, n, B), disable=not progress, unit="batch", desc=f"IS, M={M}", dynamic_ncols=True):
        idx = np.arange(start, start + B)
        xb = x0[np.minimum(idx, n - 1)]  # the last batch is padded (and cut below): one compiled shape
        keys, xb = jax.device_put((_data_keys(key, idx), xb), by_datum)
        out = _streamed(kernel, betas, keys, xb, M, C, diffusion.event_ndim, diffusion.family)
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: n - start], out))
    log_p_hat, stderr, ess, K, top = (np.concatenate(xs) for xs in zip(*parts))
    khat = np.array([khat_from_top(row, M) for row in top])
    log_null = np.asarray(diffusion.family.log_prior(jnp.asarray(x0), diffusion.event_ndim))
    return LikelihoodEstimate(log_p_hat, stderr, ess, khat, K, log_null, M, diffusion.dim)


def log_weights(
    diffusion: AbstractDiffusion,
    x0: Float[Array, "num_data *event"] | np.ndarray,  # noqa: F821 (jaxtyping dimension names)
    key: PRNGKeyArray,
    num_trajectories: int,
) -> Float[Array, "num_data M"]:
    """Every log weight log w_m(x⁰) (Eq 9) that `log_likelihood` with the same key draws, shape ``(num_data, M)``.

    Memory grows with M: for inspecting weights (histograms, `psis_khat`) on a few data.
    """
    M = positive_int("num_trajectories", num_trajectories, "Use M ≥ 1 trajectories per datum.")
    betas, kernel, x0 = _model_pieces(diffusion, x0)
    keys = _data_keys(key, np.arange(x0.shape[0]))
    run = eqx.filter_jit(_chunk_log_weights)
    return run(kernel, betas, keys, jnp.asarray(x0), jnp.asarray(0), M, diffusion.event_ndim, diffusion.family)
