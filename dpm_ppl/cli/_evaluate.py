"""``dpm evaluate``: the importance-sampled log-likelihood of a trained run beside K and the truth.

Writes into the run folder (or ``out``):

    evaluation.json   K_bits, loglik_is_bits, loglik_is_stderr_bits, khat_max, khat_frac_over_0p7, M, ...
    likelihood.nc     the ArviZ DataTree of `dpm_ppl.arviz.likelihood_datatree`
    khat.png          the PSIS k̂ of every datum's weights (and, for 2-D data, where the data lie)

All log-likelihoods are in bits per example on the standardised data, as in ``results.json``; for
dequantised images also the discrete bits/dim of DDPM and VDM (``*_discrete_bits_per_dim``, lower is better).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from .. import plots
from .._checks import positive_int
from .._stats import mean_stderr
from ..arviz import likelihood_datatree
from ..infer._likelihood import LN2, LikelihoodEstimate, discrete_bits_per_dim, log_likelihood
from ..infer._psis import KHAT_THRESHOLD
from ._json import write_json
from ._report import BASELINE_LABELS, baseline_results, has_baselines
from ._run import load_run
from ._table import print_table


__all__ = ["EVALUATION_FILE", "evaluate_run", "print_evaluation", "summarise"]

EVALUATION_FILE = "evaluation.json"
SPLITS = ("test", "val", "train")
KHAT_KEYS = ("khat_max", "khat_median")


def summarise(estimate: LikelihoodEstimate, true_log_prob: np.ndarray | None = None) -> dict[str, float]:
    """Data means in bits per example and per dimension, their standard errors and the k̂/ESS summary.

    - ``*_stderr_bits``: over data (held-out sampling error), as ``K_stderr_bits`` in results.json.
    - ``loglik_is_stderr_bits``: the Monte-Carlo standard error of the mean IS estimate,
      √(Σᵢ seᵢ²)/N: how far it may be from the model's exact mean log-likelihood on these data.
    - paired differences (IS − K, truth − IS) carry their own standard error over data.
    """
    bits = estimate.bits()
    n, d = len(bits["K"]), estimate.dim
    out: dict[str, float] = {"M": estimate.num_trajectories, "num_data": n, "dim": d}
    for name in ("K", "loglik_is", "log_null", "K_minus_Lnull", "loglik_is_minus_Lnull"):
        key = "L_null" if name == "log_null" else name
        out[f"{key}_bits"], out[f"{key}_stderr_bits"] = mean_stderr(bits[name])
        out[f"{key}_bits_per_dim"] = out[f"{key}_bits"] / d
    out["loglik_is_data_stderr_bits"] = out.pop("loglik_is_stderr_bits")
    out["loglik_is_stderr_bits"] = float(np.sqrt(np.sum(bits["loglik_is_stderr"].astype(np.float64) ** 2)) / n)
    out["is_minus_K_bits"], out["is_minus_K_stderr_bits"] = mean_stderr(bits["loglik_is"] - bits["K"])
    if true_log_prob is not None:
        true_bits = np.asarray(true_log_prob, np.float64) / LN2
        out["true_loglik_bits"], out["true_loglik_stderr_bits"] = mean_stderr(true_bits)
        out["true_loglik_bits_per_dim"] = out["true_loglik_bits"] / d
        out["truth_minus_is_bits"], out["truth_minus_is_stderr_bits"] = mean_stderr(true_bits - bits["loglik_is"])
    khat = np.asarray(estimate.khat, np.float64)
    defined = khat[~np.isnan(khat)]
    out["khat_max"] = float(defined.max()) if defined.size else float("nan")
    out["khat_median"] = float(np.median(defined)) if defined.size else float("nan")
    out["khat_frac_over_0p7"] = float(np.mean(khat > KHAT_THRESHOLD))
    out["ess_min"] = float(np.min(estimate.ess))
    out["ess_median"] = float(np.median(estimate.ess))
    return out


def print_evaluation(name: str, results: dict, T: int) -> None:
    """The table: K, the IS estimate ± its Monte-Carlo error, the truth, L_null; then k̂ and ESS."""
    rows = [("", "bits/example", "± MC", "± data", "bits/dim", "− L_null")]

    def row(label: str, key: str, data_se: str, mc: str = "") -> None:
        gain = results.get(f"{key}_minus_Lnull_bits")
        rows.append(
            (
                label,
                f"{results[f'{key}_bits']:.4f}",
                mc,
                f"{results[data_se]:.4f}",
                f"{results[f'{key}_bits_per_dim']:.4f}",
                "" if gain is None else f"{gain:.4f}",
            )
        )

    row("K (bound, Eq 12)", "K", "K_stderr_bits")
    row("IS estimate (Eq 9)", "loglik_is", "loglik_is_data_stderr_bits", f"{results['loglik_is_stderr_bits']:.4f}")
    if "true_loglik_bits" in results:
        row("true log-likelihood", "true_loglik", "true_loglik_stderr_bits")
    row("L_null", "L_null", "L_null_stderr_bits")
    print(
        f"\n{name}: {results['split']} split, {results['num_data']} data, M = {results['M']} trajectories, "
        f"T = {T} ({results['seconds']:.1f} s)"
    )
    print_table(rows)
    print(f"  IS − K = {results['is_minus_K_bits']:.4f} ± {results['is_minus_K_stderr_bits']:.4f} bits", end="")
    if "truth_minus_is_bits" in results:
        print(
            f";  truth − IS = {results['truth_minus_is_bits']:.4f} ± {results['truth_minus_is_stderr_bits']:.4f} bits"
        )
    else:
        print()
    for label, b in results.get("baselines", {}).items():
        print(
            f"  {BASELINE_LABELS.get(label, label)}: {b['bits']:.4f} ± {b['stderr_bits']:.4f} bits;  IS − it = "
            f"{b['loglik_is_minus_bits']:+.4f} ± {b['loglik_is_minus_stderr_bits']:.4f} bits (paired)"
        )
    if "loglik_is_discrete_bits_per_dim" in results:
        print(
            "  discrete bits/dim (DDPM's convention, lower is better): "
            f"IS {results['loglik_is_discrete_bits_per_dim']:.3f}, K {results['K_discrete_bits_per_dim']:.3f}"
        )
    if math.isnan(results["khat_max"]):
        print(
            f"  PSIS k̂: undefined (a tail fit needs M ≥ 25);  ESS: min {results['ess_min']:.1f}, "
            f"median {results['ess_median']:.1f} of {results['M']}"
        )
        return
    print(
        f"  PSIS k̂: max {results['khat_max']:.3f}, median {results['khat_median']:.3f}, "
        f"{100 * results['khat_frac_over_0p7']:.1f}% of data above {KHAT_THRESHOLD};  "
        f"ESS: min {results['ess_min']:.1f}, median {results['ess_median']:.1f} of {results['M']}"
    )


def evaluate_run(
    run: str | Path,
    *,
    num_trajectories: int = 1_000,
    split: Literal["test", "val", "train"] = "test",
    num_data: int | None = None,
    chunk_size: int = 128,
    batch_size: int = 64,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """``dpm evaluate``: estimate log p(x⁰) on a run's data split; write evaluation.json, the DataTree, the k̂ figure.

    The split is rebuilt from the run folder alone (its copy of the data file). Files of the validation
    and training splits carry the split's name (``evaluation_val.json``), so they never replace the
    held-out evaluation. For continuous data of modest dimension the importance-sampled log-likelihood
    is compared, per example, with the density baselines fitted on the training rows (``baselines``).
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    loaded = load_run(run)
    x0 = getattr(loaded.split, split)
    if num_data is not None:
        x0 = x0[: positive_int("num_data", num_data)]
    diffusion = loaded.diffusion
    start = time.perf_counter()
    estimate = log_likelihood(
        diffusion,
        x0,
        jax.random.key(seed),
        num_trajectories=num_trajectories,
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    standardiser = loaded.split.standardiser
    true_lp = loaded.experiment.data.true_log_prob(standardiser.inverse(x0))
    if true_lp is not None:
        true_lp = np.asarray(true_lp, np.float64) + standardiser.log_jacobian(diffusion.dim)
    results: dict[str, Any] = summarise(estimate, true_lp)
    if has_baselines(diffusion, loaded.split):
        log_p_bits = np.asarray(estimate.log_p_hat, np.float64) / LN2
        results["baselines"] = baseline_results(loaded.split.train, x0, log_p_bits, seed=0, label="loglik_is")
    bin_width = loaded.experiment.data.bin_width
    if bin_width is not None:  # dequantised images: the discrete bits/dim of DDPM and VDM, lower is better
        for name, log_p in (("K", estimate.K), ("loglik_is", estimate.log_p_hat)):
            nll = discrete_bits_per_dim(log_p, diffusion.dim, standardiser.scale, bin_width)
            results[f"{name}_discrete_bits_per_dim"] = float(np.mean(nll))
    results.update(
        split=split,
        seed=seed,
        num_steps_T=diffusion.num_steps,
        data_scale=standardiser.to_json()["scale"],
        seconds=seconds,
        trajectory_steps_per_second=len(x0) * num_trajectories * diffusion.num_steps / seconds,
    )
    out = Path(out) if out is not None else Path(run)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if split == "test" else f"_{split}"
    write_json(out / f"evaluation{suffix}.json", results, quiet=KHAT_KEYS)  # k̂ is undefined for M < 25
    likelihood_datatree(estimate, x0).to_netcdf(out / f"likelihood{suffix}.nc", engine="h5netcdf")
    plots.plot_khat(estimate.khat, out / f"khat{suffix}.png", x0)
    print_evaluation(loaded.experiment.name, results, diffusion.num_steps)
    return results
