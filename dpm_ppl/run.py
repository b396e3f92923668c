"""A run folder: fit a model script end to end, write its results, and load it back.

``fit_experiment`` trains, evaluates the held-out bound in bits beside the paper's Table 1 row
and the generator's true log-likelihood, samples, and writes into ``out``:

    run.json        how the run was made (script, data file and its SHA-256, T, seed, settings, standardiser)
    checkpoint.eqx  the SVI state (atomic; the previous one kept as .prev)
    results.json    K_bits, K_minus_Lnull_bits, K_stderr_bits, true_loglik_bits, oracle_K_bits, train_seconds, ...
    fit.nc          the ArviZ DataTree (samples, data, per-example bound, training trace, schedule)
    samples.png, trajectories.png, loss.png, betas.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import checkpoint, diagnostics
from .chains import ForwardChain
from .data import Split, Standardiser
from .experiment import Experiment, load_script
from .kernels import BernoulliMixtureOracle
from .likelihood import discrete_bits_per_dim
from .model import AbstractDiffusion, BinomialDiffusion
from .sample import sample
from .train import CHECKPOINT, TrainConfig, bound_terms, fit, make_svi


__all__ = ["LoadedRun", "fit_experiment", "load_run"]

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
LN2 = math.log(2.0)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_spec(name: str, diffusion: AbstractDiffusion, config: TrainConfig, data_sha256: str | None = None) -> dict:
    """What a checkpoint must match to be resumed or loaded: the model's shape and its trainer (and the
    content of the user's data file, for a script trained on one)."""
    params = diffusion.param_init()
    shapes = {
        jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    spec = {
        "script": name,
        "num_steps": diffusion.num_steps,
        "event_shape": list(diffusion.event_shape),
        "params": shapes,
        "optimizer": [config.learning_rate, config.final_learning_rate, config.warmup, config.steps, config.grad_clip],
    }
    if data_sha256 is not None:
        spec["data_sha256"] = data_sha256
    return spec


class LoadedRun(NamedTuple):
    """A trained run: the experiment, the trained (bound) model, its data split and settings."""

    experiment: Experiment
    diffusion: AbstractDiffusion
    split: Split
    info: dict


def _build(experiment: Experiment, num_steps: int, seed: int) -> tuple[AbstractDiffusion, Split]:
    """The untrained model and its data split: validated by the model's family (binary data must be
    0 or 1) and standardised only where the family asks for it (not binary data: Table 1 caption)."""
    key = jax.random.key(seed)
    diffusion = experiment.model(jax.random.fold_in(key, 0), num_steps)
    family = diffusion.family
    return diffusion, experiment.data.split(seed, check=family.check_data, standardise=family.standardise)


def fit_experiment(
    script: str | Path,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    num_steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    progress: bool = True,
    num_samples: int = 5_000,
    data: str | Path | None = None,
) -> dict:
    """``dpm fit``: train a model script, evaluate, sample and write the run folder; returns results.

    ``data`` is the user's data file for a script that trains on one (``models/tabular.py``,
    ``models/binary.py``); its absolute path and SHA-256 go into run.json so that `load_run`
    reloads the same examples.
    After `jax.distributed.initialize` every process trains (data parallel, see `dpm_ppl.train`);
    process 0 alone writes the run folder and reports, the others return an empty dict.
    """
    experiment = load_script(script, data)
    data_path = str(Path(data).resolve()) if data is not None else None
    T = num_steps if num_steps is not None else experiment.num_steps
    overrides = {k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None}
    config = dataclasses.replace(experiment.train, **overrides)
    if "steps" in overrides:  # keep evaluation and checkpoints inside a shortened run
        config = dataclasses.replace(
            config,
            eval_every=min(config.eval_every, config.steps),
            checkpoint_every=min(config.checkpoint_every, config.steps),
        )
    out = Path(out) if out is not None else Path("runs") / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    diffusion, split = _build(experiment, T, seed)
    data_sha256 = _sha256(data_path) if data_path is not None else None
    spec = model_spec(experiment.name, diffusion, config, data_sha256)
    info = {
        "script": str(Path(script).resolve()),
        "data": data_path,
        "data_sha256": data_sha256,
        "name": experiment.name,
        "num_steps": T,
        "seed": seed,
        "train": dataclasses.asdict(config),
        "standardiser": {"shift": split.standardiser.shift.tolist(), "scale": split.standardiser.scale},
        "spec": spec,
    }
    lead = jax.process_index() == 0  # in multi-process training only process 0 writes the run folder
    if not resume and lead:
        _write_json(out / RUN_FILE, info)
    key = jax.random.key(seed)
    result = fit(
        diffusion,
        split.train,
        split.test,
        config,
        jax.random.fold_in(key, 1),
        out_dir=out,
        spec=spec,
        resume=resume,
        progress=progress,
    )
    if not lead:
        return {}
    trained = diffusion.bind(result.params)
    return report(experiment, trained, split, result.history, out, key, num_samples=num_samples, steps=config.steps)


def _stderr(x: np.ndarray) -> float:
    """The standard error of a mean over data, sd/√n (ddof = 1; NaN for one datum)."""
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def report(
    experiment: Experiment,
    trained: AbstractDiffusion,
    split: Split,
    history: dict,
    out: Path,
    key: jax.Array,
    *,
    num_samples: int,
    steps: int,
) -> dict:
    """Evaluate on the whole held-out set, sample, and write results, DataTree and figures."""
    terms = bound_terms(trained, {}, split.test, jax.random.fold_in(key, 2))
    bits = {k: np.asarray(v) for k, v in terms.bits().items()}
    n = len(bits["K"])
    results = {
        "K_bits": float(bits["K"].mean()),
        "K_minus_Lnull_bits": float(bits["K_minus_Lnull"].mean()),
        "K_bits_per_dim": float(bits["K"].mean()) / trained.dim,
        "K_minus_Lnull_bits_per_dim": float(bits["K_minus_Lnull"].mean()) / trained.dim,
        "K_stderr_bits": _stderr(bits["K"]),
        "L_null_bits": float(bits["log_null"].mean()),
        "num_heldout": n,
        "steps": steps,
        "train_seconds": float(history["seconds"]),
        "skipped_steps": len(history.get("skipped_steps", [])),
        "num_steps_T": trained.num_steps,
        "data_scale": split.standardiser.scale,
    }
    raw_test = split.standardiser.inverse(split.test)
    true_lp = experiment.data.true_log_prob(raw_test)
    if true_lp is not None:
        true_bits = (np.asarray(true_lp) + split.standardiser.log_jacobian(trained.dim)) / LN2
        results["true_loglik_bits"] = float(true_bits.mean())
        results["true_loglik_stderr_bits"] = _stderr(true_bits)
        results["gap_to_truth_bits"] = results["true_loglik_bits"] - results["K_bits"]
    ceiling = _ceiling_model(experiment, trained)
    if ceiling is not None:  # the same draws of xᵗ: the difference to the trained K is paired
        best = np.asarray(bound_terms(ceiling, {}, split.test, jax.random.fold_in(key, 2)).bits()["K"])
        results["oracle_K_bits"] = float(best.mean())
        results["oracle_K_stderr_bits"] = _stderr(best)
        gain = best - bits["K"]
        results["oracle_minus_K_bits"] = float(gain.mean())
        results["oracle_minus_K_stderr_bits"] = _stderr(gain)
    # Results in data units too: log p_raw = log p_std − d·log(scale).
    results["K_bits_data_units"] = results["K_bits"] - split.standardiser.log_jacobian(trained.dim) / LN2
    bin_width = experiment.data.bin_width
    if bin_width is not None:  # dequantised images: DDPM's discrete bits/dim, lower is better
        nll = discrete_bits_per_dim(bits["K"] * LN2, trained.dim, split.standardiser.scale, bin_width)
        results["K_discrete_bits_per_dim"] = float(np.mean(nll))
    if experiment.paper is not None:
        results["paper_K_bits"] = experiment.paper.K_bits
        results["paper_K_minus_Lnull_bits"] = experiment.paper.K_minus_Lnull_bits

    betas = np.asarray(trained.betas())
    drawn = sample(trained, jax.random.fold_in(key, 3), num_samples, trajectory=True)
    samples = np.asarray(drawn.x0)
    results.update(experiment.data.sample_summary(split.standardiser.inverse(samples)))
    _write_json(out / RESULTS_FILE, results)
    diagnostics.fit_datatree(samples, split.test, bits, history, betas).to_netcdf(out / "fit.nc", engine="h5netcdf")
    raw = split.standardiser.inverse  # figures in data units (images: pixel intensities)
    diagnostics.plot_samples(raw(split.test[:num_samples]), raw(samples), out / "samples.png")
    m = min(1_000, num_samples, len(split.test))
    x0 = split.test[:m]
    chain = ForwardChain(jax.numpy.asarray(x0), trained.betas(), trained.event_ndim, family=trained.family)
    fwd = np.asarray(chain.sample(jax.random.fold_in(key, 4)))
    forward = np.concatenate([x0[None], np.moveaxis(fwd, 1, 0)])
    reverse = np.concatenate([samples[None, :m], np.moveaxis(np.asarray(drawn.trajectory[:m]), 1, 0)])
    diagnostics.plot_trajectories(raw(forward), raw(reverse), out / "trajectories.png")
    diagnostics.plot_loss(history, out / "loss.png")
    initial = np.asarray(experiment.model(jax.random.key(0), trained.num_steps).schedule())
    diagnostics.plot_betas(betas, out / "betas.png", initial=initial)
    print_results(results, experiment)
    return results


def _ceiling_model(experiment: Experiment, trained: AbstractDiffusion) -> BinomialDiffusion | None:
    """The trained model's schedule with the best reverse kernel of its form (`BernoulliMixtureOracle`), for a
    binomial model of data whose finite support is known; its K is the most training can reach."""
    support = experiment.data.support()
    if support is None or not isinstance(trained, BinomialDiffusion):
        return None
    oracle = BernoulliMixtureOracle(trained.betas(), *support, p=trained.base_rate)
    return dataclasses.replace(trained, network=None, kernel=oracle)


def print_results(results: dict, experiment: Experiment) -> None:
    """The held-out bound beside the paper's Table 1 row and the generator's truth."""
    units = experiment.paper.units if experiment.paper is not None else "bits"
    rows = [("", f"K ({units})", f"K − L_null ({units})")]
    rows.append(
        (
            "dpm_ppl (held-out)",
            f"{results['K_bits']:.3f} ± {results['K_stderr_bits']:.3f}",
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
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(
        f"\n{experiment.name}: T = {results['num_steps_T']}, {results['steps']} steps, {results['train_seconds']:.0f} s"
    )
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width)))
    if "K_discrete_bits_per_dim" in results:
        print(
            f"  discrete bits/dim of K (DDPM's convention, lower is better): {results['K_discrete_bits_per_dim']:.3f}"
        )
    if "valid_sample_fraction" in results:
        print(f"  samples that are true sequences: {100 * results['valid_sample_fraction']:.1f}%")


def load_run(run: str | Path) -> LoadedRun:
    """Rebuild a trained model from its run folder (``dpm sample``, ``dpm evaluate``, queries)."""
    run = Path(run)
    if not (run / RUN_FILE).is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a run folder (no {RUN_FILE}); create one with `dpm fit SCRIPT --out DIR`."
        )
    info = json.loads((run / RUN_FILE).read_text())
    data, data_sha256 = info.get("data"), info.get("data_sha256")
    if data is not None:
        if not Path(data).is_file():
            raise FileNotFoundError(
                f"The data file {data!r} that {str(run)!r} was trained on is gone (moved or deleted). Put it back "
                f"at that path, or edit `data` in {str(run / RUN_FILE)!r} to its new location."
            )
        if _sha256(data) != data_sha256:
            raise checkpoint.CheckpointError(
                f"The data file {data!r} changed since {str(run)!r} was trained on it (its SHA-256 differs from "
                f"run.json's). Restore the original file, or train a new run on this one."
            )
    experiment = load_script(info["script"], data)
    diffusion, split = _build(experiment, info["num_steps"], info["seed"])
    config = TrainConfig(**info["train"])
    svi = make_svi(diffusion, config)
    like = svi.init(jax.random.key(0), jax.numpy.asarray(split.train[: config.batch_size]))
    spec = model_spec(experiment.name, diffusion, config, data_sha256)
    state, _ = checkpoint.load(run / CHECKPOINT, like, spec)
    expected = Standardiser(np.asarray(info["standardiser"]["shift"], np.float32), info["standardiser"]["scale"])
    if not np.allclose(expected.scale, split.standardiser.scale):
        raise checkpoint.CheckpointError(f"The data of {str(run)!r} changed since training (standardiser differs).")
    return LoadedRun(experiment, diffusion.bind(svi.get_params(state)), split, info)
