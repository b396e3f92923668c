"""Log-likelihood by importance sampling over forward trajectories (paper §2.3, Eqs 6–9; paper-spec §6).

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
log p̂, and the PSIS Pareto k̂ of the weights' right tail (arviz-stats, after spreading the tied log
weights of discrete weights; k̂ > 0.7 means the estimate is unreliable). `likelihood_datatree` stores
them in an ArviZ DataTree whose ``log_likelihood`` group `elpd` turns into an `arviz_stats.ELPDData`
that `arviz_stats.compare` accepts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from arviz_stats import ELPDData, loo
from arviz_stats.base import array_stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from .arguments import positive_int
from .bound import bound_terms
from .family import AbstractFamily
from .kernels import ReverseKernel
from .model import X0, AbstractDiffusion


__all__ = [
    "LikelihoodEstimate",
    "discrete_bits_per_dim",
    "elpd",
    "likelihood_datatree",
    "log_likelihood",
    "log_weights",
    "psis_khat",
]

LN2 = math.log(2.0)
KHAT_THRESHOLD = 0.7  # PSIS: above it the importance-sampling estimate is unreliable (Vehtari et al. 2024)


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

    log_p_hat: Array
    stderr: Array
    ess: Array
    khat: Array
    K: Array
    log_null: Array
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
    log_p: Float[Array, "..."] | np.ndarray | float, dim: int, scale: float, bin_width: float = 1.0 / 256
) -> np.ndarray:
    """The discrete negative log-likelihood in bits per dimension of quantised data (paper-spec §1, "Scale caveat").

    For data quantised into bins of width ``bin_width`` (in raw data units; 1/256 for 8-bit values
    in [0, 1]), dequantised with uniform noise and standardised as z = (x − shift)/``scale``
    (`dpm_ppl.data.Standardiser`), a density log p_z(z) (nats, per example, e.g. log p̂ or K) gives

        bits/dim = −log₂ p_z(z)/d + log₂(scale) − log₂(bin_width)
                 = 8 − log₂(s) − log₂ p_z(z)/d   for 8-bit data in [0, 1] and s = 1/scale,

    since log p_x(x) = log p_z(z) − d·log(scale) and P(bin) ≥ bin_width^d·exp E[log p_x] (Jensen
    over the dequantisation noise). Averaged over dequantised data this is an upper bound on the
    discrete bits/dim that DDPM (3.70) and VDM (2.65) report; it is lower-is-better, unlike K.
    """
    log_p = np.asarray(log_p, np.float64)
    return -log_p / (dim * LN2) + math.log2(scale) - math.log2(bin_width)


def _tail_length(num_trajectories: int) -> int:
    """The PSIS tail length arviz-stats uses for M draws at r_eff = 1 (Vehtari et al. 2024, §3)."""
    M = num_trajectories
    return int(math.floor(3 * math.sqrt(M))) if M > 225 else M // 5


def _num_top(num_trajectories: int) -> int:
    """How many of the largest log weights PSIS needs: the tail and the cutoff just below it."""
    return min(_tail_length(num_trajectories) + 1, num_trajectories)


# Ties at working precision (see `_khat_from_top`): log weights whose consecutive differences and whose
# spread are within _TIE_ULPS units of roundoff of their magnitude, and whose nearest other log weights are
# at least _TIE_ISOLATION times that spread away, are one atom of the weights' distribution.
_TIE_ULPS = 1024
_TIE_ISOLATION = 100.0


def _working_eps(values: np.ndarray) -> float:
    """The unit roundoff of the precision the log weights were computed in: float32's if every value is a float32."""
    is_float32 = np.array_equal(values.astype(np.float32).astype(np.float64), values)
    return float(np.finfo(np.float32 if is_float32 else np.float64).eps)


def _tied_groups(top: np.ndarray) -> list[tuple[int, int]]:
    """The index ranges [a, b) of `top` (finite, descending) that are atoms: ≥ 2 log weights equal at working precision.

    A run of log weights whose consecutive gaps are ≤ δ = _TIE_ULPS·ε·max(1, max|log w|) (ε the working
    precision's, `_working_eps`) is an atom if its whole width is ≤ δ as well and the log weights next to it
    are ≥ _TIE_ISOLATION × its width away (only the one above for the last run, whose lower neighbour is not
    in `top`), so exact ties more than δ from other values are atoms; the width and isolation conditions keep
    dense continuous weights, whose spacings can be comparable to δ at large |log w| in float32, unmerged.
    """
    tol = _TIE_ULPS * _working_eps(top) * max(1.0, float(np.abs(top).max()))
    gaps = top[:-1] - top[1:]
    cuts = np.flatnonzero(gaps > tol) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(top)]
    runs = (ends - starts >= 2) & (top[starts] - top[ends - 1] <= tol)
    groups = []
    for a, b in zip(starts[runs], ends[runs]):
        width = top[a] - top[b - 1]
        neighbours = ([gaps[a - 1]] if a > 0 else []) + ([gaps[b - 1]] if b < len(top) else [])
        if all(g >= _TIE_ISOLATION * width for g in neighbours):
            groups.append((int(a), int(b)))
    return groups


def _spread_ties(top: np.ndarray, groups: list[tuple[int, int]]) -> np.ndarray:
    """Spread each atom of `top` (descending) evenly over a window of the tail's mean spacing; re-sorted.

    The distinct log weights of `top` (the atoms' means and the untied values) have mean spacing
    Δ = (max − min)/(number − 1). The n members of an atom at value v (their mean) are put at the mid-rank
    quantiles of U(v − Δ/2, v + Δ/2): v + Δ/2 − (i − ½)Δ/n, i = 1…n, the deterministic counterpart of the
    continuous extension v + (U − ½)Δ of lattice data of step Δ. Untied log weights are unchanged.
    """
    starts = dict(groups)
    blocks, i = [], 0
    while i < len(top):
        blocks.append((i, starts.get(i, i + 1)))
        i = blocks[-1][1]
    values = np.array([top[a:b].mean() for a, b in blocks])
    step = (values[0] - values[-1]) / (len(values) - 1)  # len(blocks) ≥ 2: one block over `top` is a constant tail
    out = top.copy()
    for (a, b), value in zip(blocks, values):
        if b - a > 1:
            out[a:b] = value + step / 2 - (np.arange(b - a) + 0.5) / (b - a) * step
    return -np.sort(-out)


def _khat_from_top(top: np.ndarray, num_trajectories: int) -> float:
    """PSIS k̂ of M weights from their largest log weights (descending): arviz-stats' `psislw`, ties spread first.

    PSIS (Vehtari et al. 2024, "Pareto smoothed importance sampling", JMLR 25(72)) fits a generalized
    Pareto distribution to the n_tail = ⌊3√M⌋ largest weights' exceedances over the next one, the cutoff.
    It reads only the tail and the cutoff, so the other M − len(top) entries are filled with the cutoff
    (a transient host array of M floats per datum). `psislw` smooths log *ratios* r with weights exp(−r)
    (LOO's convention), so it is given −log w: `psislw(log_w)` would fit the left tail (the ecosystem
    notes' sign trap).

    **Ties.** The fit assumes a continuous tail. Discrete weights (e.g. binomial diffusion on a few bits:
    few distinct trajectories) have atoms, many log weights equal exactly or to float rounding: an atom at
    the cutoff makes most exceedances ~0 and the fit fails (NaN) or gives k̂ ≫ 1 for weights of small
    variance. So each atom (`_tied_groups`: equal at working precision, isolated) is first spread
    deterministically, in log w, over a window as wide as the mean spacing Δ of the distinct log weights
    of `top`, at mid-rank quantiles (`_spread_ties`): the deterministic counterpart of the continuous
    extension of discrete data by uniform jitter (Denuit & Lambert 2005, J. Multivariate Anal. 93). Each
    atom becomes a narrow bounded block, so a bounded discrete tail gets k̂ ≤ 0 or small, while a lattice
    tail such as w = 2^J, P(J = j) ∝ 2^(−αj) (Δ ≈ log 2) becomes a piecewise-uniform density in log w with
    the same tail index k = 1/α. Distinct values closer than Δ may interleave; windows of half the gaps to
    the neighbouring values would keep their order, but then a large atom next to a close small one stays
    a spike (measured on 4-bit oracle weights: k̂ up to 2.7 at relative variance ≤ 7). Untied log weights
    are untouched, so continuous weights without ties give `psislw`'s k̂ exactly. The atom at the cutoff
    is seen only down to the cutoff; its visible part is spread over the whole window. A tail that is one
    atom is constant: −inf, as is an exactly constant tail. With few atoms in the tail (e.g. 3) k̂
    describes their spacing and masses, and can exceed 0.7 for bounded weights until M reaches them.
    """
    n_tail = _tail_length(num_trajectories)
    if n_tail < 5:
        return float("nan")
    top = np.asarray(top, np.float64)
    if top[0] - top[n_tail - 1] < np.finfo(float).tiny:
        return float("-inf")
    if np.isfinite(top).all():
        groups = _tied_groups(top)
        if groups and groups[0][0] == 0 and groups[0][1] >= n_tail:
            return float("-inf")  # the whole tail is one atom
        if groups:
            top = _spread_ties(top, groups)
    full = np.concatenate([top, np.full(num_trajectories - len(top), top[-1])])
    _, khat = array_stats.psislw(-full, r_eff=1.0)
    return float(khat)


def psis_khat(log_w: Float[Array, "*batch M"] | np.ndarray) -> np.ndarray:
    """The PSIS Pareto k̂ of importance weights exp(log_w) along the last axis (arviz-stats).

    k̂ estimates the shape of the weights' right tail: the weights have finite variance for k < ½,
    and the estimate is reliable for k̂ < 0.7 (Vehtari et al. 2024). Log weights tied exactly or to
    float rounding (discrete weights) are spread over the tail's spacing before the fit (`_khat_from_top`).
    NaN when M < 25 or the fit fails, −inf for a constant tail (constant to working precision).
    """
    log_w = np.asarray(log_w, np.float64)
    M = log_w.shape[-1]
    top = -np.sort(-log_w, axis=-1)[..., : _num_top(M)]
    flat = top.reshape(-1, top.shape[-1])
    return np.array([_khat_from_top(row, M) for row in flat]).reshape(log_w.shape[:-1])


def _model_pieces(diffusion: AbstractDiffusion, x0: np.ndarray) -> tuple[Array, ReverseKernel, np.ndarray]:
    """The schedule, the reverse kernel and the validated data of a bound model or an oracle."""
    if not isinstance(diffusion, AbstractDiffusion):
        raise TypeError(
            f"`diffusion` must be a dpm_ppl.GaussianDiffusion or BinomialDiffusion, got {type(diffusion).__name__}."
        )
    if diffusion.trainable and (diffusion.network is not None or diffusion.schedule.is_learned):
        raise ValueError(
            "`diffusion` has trainable parameters that are not bound: evaluate `diffusion.bind(params)` "
            "(e.g. `dpm_ppl.run.load_run(RUN).diffusion`), or a model with a fixed `kernel=`."
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
    n_top = _num_top(M)

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
    x0: Float[Array, "num_data *event"] | np.ndarray,
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
      or one with a fixed ``kernel=`` (the oracles of `dpm_ppl.kernels`).
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
    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    by_datum, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    B = -(-min(B, n) // mesh.size) * mesh.size  # a whole number of data per device
    dynamic, static = eqx.partition((kernel, betas), eqx.is_array)
    kernel, betas = eqx.combine(jax.device_put(dynamic, replicated), static)
    parts = []
    for start in tqdm(range(0, n, B), disable=not progress, unit="batch", desc=f"IS, M={M}", dynamic_ncols=True):
        idx = np.arange(start, start + B)
        xb = x0[np.minimum(idx, n - 1)]  # the last batch is padded (and cut below): one compiled shape
        keys, xb = jax.device_put((_data_keys(key, idx), xb), by_datum)
        out = _streamed(kernel, betas, keys, xb, M, C, diffusion.event_ndim, diffusion.family)
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: n - start], out))
    log_p_hat, stderr, ess, K, top = (np.concatenate(xs) for xs in zip(*parts))
    khat = np.array([_khat_from_top(row, M) for row in top])
    log_null = np.asarray(diffusion.family.log_prior(jnp.asarray(x0), diffusion.event_ndim))
    return LikelihoodEstimate(log_p_hat, stderr, ess, khat, K, log_null, M, diffusion.dim)


def log_weights(
    diffusion: AbstractDiffusion,
    x0: Float[Array, "num_data *event"] | np.ndarray,
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


def likelihood_datatree(estimate: LikelihoodEstimate, x0: np.ndarray | None = None) -> xr.DataTree:
    """An ArviZ DataTree of the per-datum estimate.

    - ``log_likelihood``: variable ``"x0"`` (the model's observed site), log p̂ in nats, dims
      (chain = 1, draw = 1, datum): the trained model is a point estimate, so there is one "draw".
    - ``sample_stats``: ``khat``, ``ess``, ``stderr`` (nats) and ``K`` (nats) by datum.
    - ``observed_data``: the data, dims (datum, dim), when ``x0`` is given.

    `elpd` turns it into an `arviz_stats.ELPDData` for `arviz_stats.compare`.
    """
    n = len(estimate.log_p_hat)
    groups = {
        "log_likelihood": xr.Dataset({X0: (("chain", "draw", "datum"), np.asarray(estimate.log_p_hat)[None, None])}),
        "sample_stats": xr.Dataset(
            {name: (("datum",), np.asarray(getattr(estimate, name))) for name in ("khat", "ess", "stderr", "K")}
        ),
    }
    if x0 is not None:
        flat = np.asarray(x0).reshape(n, -1)
        groups["observed_data"] = xr.Dataset({X0: (("datum", "dim"), flat)})
    for ds in groups.values():
        ds.coords["datum"] = np.arange(n)
    groups["log_likelihood"].attrs.update(units="nats", estimator="importance sampling over forward trajectories")
    groups["sample_stats"].attrs.update(num_trajectories=estimate.num_trajectories, dim=estimate.dim)
    return xr.DataTree.from_dict({f"/{name}": ds for name, ds in groups.items()})


def elpd(tree: xr.DataTree) -> ELPDData:
    """The held-out log predictive density Σᵢ log p̂(xᵢ) as an `ELPDData` that `arviz_stats.compare` ranks.

    Runs `arviz_stats.loo` on the single-draw ``log_likelihood`` group with zero log weights
    (the model is a point estimate and the data are held out, so nothing is left out) and the
    importance-sampling k̂ as each datum's Pareto k: elpd_i = log p̂(xᵢ), se = √N·sd(elpd_i), and
    loo warns when some k̂ > 0.7. ``arviz_stats.loo(tree)`` itself would try PSIS on one draw.
    """
    zeros = xr.zeros_like(tree["log_likelihood"][X0])
    khat = tree["sample_stats"]["khat"]  # NaN (undefined) counts as neither good nor bad
    return loo(tree, pointwise=True, var_name=X0, reff=1.0, log_weights=zeros, pareto_k=khat)
