"""What ``dpm fit`` reports on a trained run: the held-out bound in bits beside the paper's Table 1 row, the
generator's true log-likelihood, the binomial oracle's ceiling and the density baselines; then samples, the
ArviZ DataTree, the figures and the printed table. `report` runs the three steps: `heldout_results` (numbers),
`write_outputs` (files), `print_results` (the table)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np

from .. import plots
from .._chains import ForwardChain
from .._kernels import BernoulliMixtureOracle
from .._model import AbstractDiffusion, BinomialDiffusion
from .._stats import mean_stderr
from ..arviz import fit_datatree
from ..datasets._base import Split
from ..infer._baselines import baselines
from ..infer._likelihood import discrete_bits_per_dim
from ..infer._sample import sample
from ..infer._train import FitResult, evaluate_bound
from ._experiment import Experiment
from ._json import write_json
from ._table import print_table


__all__ = [
    "BASELINE_LABELS",
    "baseline_results",
    "has_baselines",
    "heldout_results",
    "modality",
    "print_results",
    "report",
    "write_figures",
    "write_outputs",
]

RESULTS_FILE = "results.json"
LN2 = math.log(2.0)
MAX_BASELINE_DIM = 100
BASELINE_LABELS = {"gaussian": "full-covariance Gaussian", "gmm": "Gaussian mixture (k by CV)"}


def baseline_results(train: np.ndarray, test: np.ndarray, K_bits: np.ndarray, *, seed: int, label: str = "K") -> dict:
    """The density baselines a user can act on (`baselines`: a full-covariance Gaussian and a
    Gaussian mixture whose k is chosen by cross-validation on the training rows), fitted on the same
    training rows and scored on the same held-out rows as the model, in the same units as ``K_bits``, with
    the paired difference ``label`` − baseline per example and its standard error."""
    out: dict = {}
    for baseline in baselines(train.reshape(len(train), -1), test.reshape(len(test), -1), seed=seed):
        bits = np.asarray(baseline.log_prob, np.float64) / LN2
        mean, se = mean_stderr(bits)
        diff, diff_se = mean_stderr(K_bits - bits)
        out[baseline.name] = {"bits": mean, "stderr_bits": se, f"{label}_minus_bits": diff,
                              f"{label}_minus_stderr_bits": diff_se, **baseline.detail}  # fmt: skip
    return out


def has_baselines(trained: AbstractDiffusion, split: Split) -> bool:
    """Density baselines apply to continuous data of modest dimension (not binary data or images)."""
    return trained.family.standardise and trained.dim <= MAX_BASELINE_DIM and len(split.train) > trained.dim + 1


def report(
    experiment: Experiment,
    trained: AbstractDiffusion,
    split: Split,
    result: FitResult,
    out: Path,
    key: jax.Array,
    *,
    num_samples: int,
    steps: int,
) -> dict:
    """Evaluate on the whole held-out set, sample, write results, DataTree and figures, and print the table."""
    results, bits = heldout_results(experiment, trained, split, result, key, steps=steps)
    write_outputs(experiment, trained, split, result.history, results, bits, out, key, num_samples=num_samples)
    print_results(results, experiment)
    return results


def heldout_results(
    experiment: Experiment, trained: AbstractDiffusion, split: Split, result: FitResult, key: jax.Array, *, steps: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """The numbers of results.json (bits on the held-out set, beside the truth, the ceiling, the baselines and the
    paper) and the bound's terms per held-out example in bits."""
    history = result.history
    terms = evaluate_bound(trained, {}, split.test, jax.random.fold_in(key, 2))
    bits = {k: np.asarray(v) for k, v in terms.bits().items()}
    n = len(bits["K"])
    results = {
        "K_bits": float(bits["K"].mean()),
        "K_minus_Lnull_bits": float(bits["K_minus_Lnull"].mean()),
        "K_bits_per_dim": float(bits["K"].mean()) / trained.dim,
        "K_minus_Lnull_bits_per_dim": float(bits["K_minus_Lnull"].mean()) / trained.dim,
        "K_stderr_bits": mean_stderr(bits["K"])[1],
        "L_null_bits": float(bits["log_null"].mean()),
        "num_train": len(split.train),
        "num_val": len(split.val),
        "num_heldout": n,
        "steps": steps,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "steps_run": history.get("stopped_step") or steps,
        "best_val_K_bits": history.get("best_K_bits"),
        "train_seconds": float(history["seconds"]),
        "skipped_steps": len(history.get("skipped_steps", [])),
        "num_steps_T": trained.num_steps,
        "data_scale": split.standardiser.to_json()["scale"],
    }
    log_jacobian = split.standardiser.log_jacobian(trained.dim)
    raw_test = split.standardiser.inverse(split.test)
    true_lp = experiment.data.true_log_prob(raw_test)
    if true_lp is not None:
        true_bits = (np.asarray(true_lp) + log_jacobian) / LN2
        results["true_loglik_bits"] = float(true_bits.mean())
        results["true_loglik_stderr_bits"] = mean_stderr(true_bits)[1]
        results["gap_to_truth_bits"] = results["true_loglik_bits"] - results["K_bits"]
    ceiling = _ceiling_model(experiment, trained)
    if ceiling is not None:  # the same draws of xᵗ: the difference to the trained K is paired
        best = np.asarray(evaluate_bound(ceiling, {}, split.test, jax.random.fold_in(key, 2)).bits()["K"])
        results["oracle_K_bits"] = float(best.mean())
        results["oracle_K_stderr_bits"] = mean_stderr(best)[1]
        gain = best - bits["K"]
        results["oracle_minus_K_bits"] = float(gain.mean())
        results["oracle_minus_K_stderr_bits"] = mean_stderr(gain)[1]
    if has_baselines(trained, split):
        results["baselines"] = baseline_results(split.train, split.test, bits["K"], seed=0)
    # Results in data units too: log p_raw = log p_std − log|scale|.
    results["K_bits_data_units"] = results["K_bits"] - log_jacobian / LN2
    bin_width = experiment.data.bin_width
    if bin_width is not None:  # dequantised images: DDPM's discrete bits/dim, lower is better
        nll = discrete_bits_per_dim(bits["K"] * LN2, trained.dim, split.standardiser.scale, bin_width)
        results["K_discrete_bits_per_dim"] = float(np.mean(nll))
    if experiment.paper is not None:
        results["paper_K_bits"] = experiment.paper.K_bits
        results["paper_K_minus_Lnull_bits"] = experiment.paper.K_minus_Lnull_bits
    return results, bits


def write_outputs(
    experiment: Experiment,
    trained: AbstractDiffusion,
    split: Split,
    history: dict,
    results: dict,
    bits: dict[str, np.ndarray],
    out: Path,
    key: jax.Array,
    *,
    num_samples: int,
) -> None:
    """Sample, then write results.json (with the samples' summary), fit.nc and the figures into ``out``."""
    betas = np.asarray(trained.betas())
    drawn = sample(trained, jax.random.fold_in(key, 3), num_samples, trajectory=True)
    samples = np.asarray(drawn.x0)
    results.update(experiment.data.sample_summary(split.standardiser.inverse(samples)))
    write_json(out / RESULTS_FILE, results)
    fit_datatree(samples, split.test, bits, history, betas).to_netcdf(out / "fit.nc", engine="h5netcdf")
    write_figures(experiment, trained, split, samples, out)
    m = min(1_000, num_samples, len(split.test))
    x0 = split.test[:m]
    chain = ForwardChain(jax.numpy.asarray(x0), trained.betas(), trained.event_ndim, family=trained.family)
    fwd = np.asarray(chain.sample(jax.random.fold_in(key, 4)))
    forward = np.concatenate([x0[None], np.moveaxis(fwd, 1, 0)])
    assert drawn.trajectory is not None  # drawn with trajectory=True
    reverse = np.concatenate([samples[None, :m], np.moveaxis(np.asarray(drawn.trajectory[:m]), 1, 0)])
    kind = modality(experiment, trained)
    if split.standardiser.per_column:  # data units would squash columns of different scales to a line
        plots.plot_trajectories(forward, reverse, out / "trajectories.png", kind, units="standardised units")
    else:
        raw = split.standardiser.inverse
        plots.plot_trajectories(raw(forward), raw(reverse), out / "trajectories.png", kind)
    plots.plot_loss(history, out / "loss.png")
    initial = np.asarray(experiment.model(jax.random.key(0), trained.num_steps).schedule())
    plots.plot_betas(betas, out / "betas.png", initial=initial)


def modality(experiment: Experiment, trained: AbstractDiffusion) -> str:
    """How the run's states are drawn: as its data say (images), else as its family's states."""
    return experiment.data.modality or trained.family.modality


def write_figures(
    experiment: Experiment, trained: AbstractDiffusion, split: Split, samples: np.ndarray, out: Path, prefix: str = ""
) -> None:
    """Samples beside held-out data in data units: ``samples.png`` and, for rows of numbers, the pair
    plot and the per-column marginals with the columns' names."""
    raw = split.standardiser.inverse  # figures in data units (images: pixel intensities)
    data, drawn = raw(split.test[: len(samples)]), raw(samples)
    plots.plot_samples(data, drawn, out / f"{prefix}samples.png", modality(experiment, trained))
    if trained.event_ndim == 1 and trained.family.standardise:
        names = getattr(experiment.data, "column_names", None)
        plots.plot_pairs(data, drawn, out / f"{prefix}pairs.png", names=names)
        plots.plot_marginals(data, drawn, out / f"{prefix}marginals.png", names=names)


def _ceiling_model(experiment: Experiment, trained: AbstractDiffusion) -> BinomialDiffusion | None:
    """The trained model's schedule with the best reverse kernel of its form (`BernoulliMixtureOracle`), for a
    binomial model of data whose finite support is known; its K is the most training can reach."""
    support = experiment.data.support()
    if support is None or not isinstance(trained, BinomialDiffusion):
        return None
    oracle = BernoulliMixtureOracle(trained.betas(), *support, p=trained.base_rate)
    return dataclasses.replace(trained, network=None, kernel=oracle)


def _fmt(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


def print_results(results: dict, experiment: Experiment) -> None:
    """The held-out bound beside the paper's Table 1 row and the generator's truth."""
    units = experiment.paper.units if experiment.paper is not None else "bits"
    rows = [("", f"K ({units})", f"K − L_null ({units})")]
    rows.append(
        (
            "dpm_ppl (held-out)",
            f"{results['K_bits']:.3f} ± {_fmt(results['K_stderr_bits'])}",
            f"{results['K_minus_Lnull_bits']:.3f}",
        )
    )
    if experiment.paper is not None:
        rows.append(("paper, Table 1", f"{experiment.paper.K_bits}", f"{experiment.paper.K_minus_Lnull_bits}"))
    if "oracle_K_bits" in results:
        rows.append(
            ("best kernel of this form", f"{results['oracle_K_bits']:.3f} ± {results['oracle_K_stderr_bits']:.3f}", "")
        )
    if "true_loglik_bits" in results:
        rows.append(
            ("true log-likelihood", f"{results['true_loglik_bits']:.3f} ± {results['true_loglik_stderr_bits']:.3f}", "")
        )
    for name, b in results.get("baselines", {}).items():
        rows.append(
            (
                f"{BASELINE_LABELS.get(name, name)}",
                f"{b['bits']:.3f} ± {_fmt(b['stderr_bits'])}",
                f"K − it: {b['K_minus_bits']:+.3f} ± {_fmt(b['K_minus_stderr_bits'])}",
            )
        )
    stop = f", stopped early at {results['steps_run']}" if results.get("stopped_early") else ""
    print(
        f"\n{experiment.name}: T = {results['num_steps_T']}, {results['steps']} steps{stop}, "
        f"{results['train_seconds']:.0f} s; parameters of step {results['best_step']} (best validation K)"
    )
    print_table(rows)
    if "K_discrete_bits_per_dim" in results:
        print(
            f"  discrete bits/dim of K (DDPM's convention, lower is better): {results['K_discrete_bits_per_dim']:.3f}"
        )
    if "valid_sample_fraction" in results:
        print(f"  samples that are true sequences: {100 * results['valid_sample_fraction']:.1f}%")
