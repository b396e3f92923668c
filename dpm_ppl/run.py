"""A run folder: fit a model script end to end, write its results, and load it back.

``fit_experiment`` trains on the training rows (keeping the parameters of the best validation K),
evaluates the held-out bound in bits beside the paper's Table 1 row, the generator's true
log-likelihood and the density baselines a user can act on, samples, and writes into ``out``:

    run.json        how the run was made (script and data SHA-256, columns, T, seed, settings, standardiser)
    script.py       the model script as trained (the folder is self-contained: `load_run` reads this copy)
    data/FILE       the user's data file as trained on (scripts that take `--data`)
    checkpoint.eqx  the last SVI state, for `--resume` (atomic; the previous one kept as .prev)
    best.eqx        the SVI state of the best validation K (what `load_run` returns)
    results.json    K_bits, K_stderr_bits, best_step, baselines, true_loglik_bits, oracle_K_bits, train_seconds, ...
    fit.nc          the ArviZ DataTree (samples, data, per-example bound, training trace, schedule)
    samples.png, pairs.png, marginals.png, trajectories.png, loss.png, betas.png

A folder holding another run is never overwritten silently (`prepare_folder`), and a fresh run
clears every stale output of an earlier one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import checkpoint, diagnostics
from .baselines import baselines
from .chains import ForwardChain
from .data import Split, Standardiser
from .experiment import Experiment, load_script
from .kernels import BernoulliMixtureOracle
from .likelihood import discrete_bits_per_dim
from .model import AbstractDiffusion, BinomialDiffusion
from .records import mean_stderr, write_json
from .sample import sample
from .train import BEST_CHECKPOINT, CHECKPOINT, FitResult, TrainConfig, TrainingInterrupted, bound_terms, fit, make_svi


__all__ = ["LoadedRun", "RunFolderError", "fit_experiment", "load_run", "prepare_folder"]

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
SCRIPT_COPY = "script.py"
DATA_COPY = "data"
LN2 = math.log(2.0)
# what makes two runs the same run (`prepare_folder`)
IDENTITY = ("name", "script_sha256", "data_sha256", "columns", "num_steps", "seed", "train", "spec")
# every file or folder a command writes into a run folder, besides checkpoints, queries and data copies
OUTPUTS = (
    RUN_FILE, RESULTS_FILE, SCRIPT_COPY, DATA_COPY, "fit.nc", "samples.png", "pairs.png", "marginals.png",
    "trajectories.png", "loss.png", "betas.png", "evaluation.json", "likelihood.nc", "khat.png", "sample",
    "samples.npz",  # where `dpm sample` wrote before it had its own folder
)  # fmt: skip
MAX_BASELINE_DIM = 100
BASELINE_LABELS = {"gaussian": "full-covariance Gaussian", "gmm": "Gaussian mixture (k by CV)"}


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


class RunFolderError(ValueError):
    """A run folder that cannot take this run: it holds another run, or an unfinished one."""


def _identity(info: dict) -> dict:
    """What makes two runs the same run: the script's and data's content, T, seed and settings."""
    return {k: info.get(k) for k in IDENTITY}


def _differences(old: dict, new: dict) -> list[str]:
    return [k for k in IDENTITY if old.get(k) != new.get(k)]


def _clear_outputs(out: Path) -> None:
    """Remove what any command wrote into a run folder (a fresh run must not sit beside stale results)."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for pattern in ("*.eqx*", "query_*", "*.tmp", "evaluation_*.json", "likelihood_*.nc", "khat_*.png"):
        for path in out.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prepare_folder(out: Path, info: dict, *, resume: bool, force: bool) -> None:
    """Check that ``out`` may take this run; clear stale outputs of a fresh start.

    - ``resume``: ``out`` must hold this same run (script, data, T, seed, settings) and its checkpoint.
    - a fresh start refuses a folder holding a different run, an unfinished run of the same settings
      (its checkpoint is work: resume it), or a run's outputs without its run.json, unless ``force``. Files
      that no command writes (the user's own, e.g. the data file) are never touched.
    """
    run_file = out / RUN_FILE
    old = json.loads(run_file.read_text()) if run_file.is_file() else None
    if resume:
        if old is None:
            raise RunFolderError(f"`--resume` was given but {str(out)!r} holds no run ({RUN_FILE} is missing).")
        changed = _differences(old, info)
        if changed:
            raise RunFolderError(
                f"`--resume` continues only the same run, but {str(out)!r} was trained with other "
                f"{', '.join(changed)}. Resume with the original settings, or start this run in another folder "
                "(`--out`), or overwrite it with `--force` (its checkpoint is lost)."
            )
        return
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        if old is None:
            ours = sorted(p.name for p in out.iterdir() if p.name in OUTPUTS or p.name.endswith((".eqx", ".eqx.prev")))
            if ours:
                raise RunFolderError(
                    f"{str(out)!r} holds outputs of a run ({', '.join(ours)}) but no {RUN_FILE}, so it cannot be "
                    "told whether they are this run's; choose another folder with `--out`, or give `--force` to "
                    "replace them."
                )
            return  # other files (the user's own) are never touched
        changed = _differences(old, info)
        if changed:
            raise RunFolderError(
                f"{str(out)!r} holds a different run (other {', '.join(changed)}); choose another folder with "
                "`--out`, or give `--force` to replace it (its checkpoint and results are deleted)."
            )
        if (out / CHECKPOINT).exists() and not (out / RESULTS_FILE).exists():
            raise RunFolderError(
                f"{str(out)!r} holds an unfinished run of these settings: add `--resume` to continue it from its "
                "checkpoint, or `--force` to start it again from step 0."
            )
    _clear_outputs(out)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def fit_experiment(
    script: str | Path,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    num_steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    num_samples: int = 5_000,
    data: str | Path | None = None,
    columns: str | None = None,
) -> dict:
    """``dpm fit``: train a model script, evaluate, sample and write the run folder; returns results.

    ``data`` is the user's data file for a script that trains on one (``models/tabular.py``,
    ``models/binary.py``), and ``columns`` its columns to model (names or indices, comma-separated).
    The script and the data file are copied into the run folder with their SHA-256, so `load_run`
    rebuilds the same model from the folder alone. A folder holding another run is refused unless
    ``force`` (`prepare_folder`); on SIGINT or SIGTERM the checkpoint at the current step is written
    and `dpm_ppl.train.TrainingInterrupted` raised, carrying the command that resumes.
    After `jax.distributed.initialize` every process trains (data parallel, see `dpm_ppl.train`);
    process 0 alone writes the run folder and reports, the others return an empty dict.
    """
    options = {"columns": columns} if columns is not None else {}
    experiment = load_script(script, data, **options)
    script_path = Path(script).resolve()
    data_path = Path(data).resolve() if data is not None else None
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
    diffusion, split = _build(experiment, T, seed)
    data_sha256 = _sha256(data_path) if data_path is not None else None
    spec = model_spec(experiment.name, diffusion, config, data_sha256)
    info = {
        "script": str(script_path),
        "script_sha256": _sha256(script_path),
        "data": str(data_path) if data_path is not None else None,
        "data_sha256": data_sha256,
        "columns": columns,
        "name": experiment.name,
        "num_steps": T,
        "seed": seed,
        "train": dataclasses.asdict(config),
        "standardiser": split.standardiser.to_json(),
        "spec": spec,
    }
    lead = jax.process_index() == 0  # in multi-process training only process 0 writes the run folder
    if lead:
        prepare_folder(out, info, resume=resume, force=force)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            _copy_atomic(script_path, out / SCRIPT_COPY)
            if data_path is not None:
                (out / DATA_COPY).mkdir(exist_ok=True)  # under its own name: scripts name runs after their file
                _copy_atomic(data_path, out / DATA_COPY / data_path.name)
            write_json(out / RUN_FILE, info)
    key = jax.random.key(seed)
    try:
        result = fit(
            diffusion,
            split.train,
            split.val,
            config,
            jax.random.fold_in(key, 1),
            out_dir=out,
            spec=spec,
            resume=resume,
            progress=progress,
        )
    except TrainingInterrupted as err:
        given = {"--data": data, "--columns": columns, "--steps": steps, "--T": num_steps, "--batch-size": batch_size}
        flags = [f"{flag} {shlex.quote(str(v))}" for flag, v in given.items() if v is not None]
        flags += [f"--seed {seed}"] if seed else []
        err.resume_command = shlex.join(["dpm", "fit", str(script)]) + "".join(f" {f}" for f in flags)
        err.resume_command += f" --out {shlex.quote(str(out))} --resume"
        raise
    if not lead:
        return {}
    trained = diffusion.bind(result.params)
    return report(experiment, trained, split, result, out, key, num_samples=num_samples, steps=config.steps)


def baseline_results(train: np.ndarray, test: np.ndarray, K_bits: np.ndarray, *, seed: int, label: str = "K") -> dict:
    """The density baselines a user can act on (`dpm_ppl.baselines`: a full-covariance Gaussian and a
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
    """Evaluate on the whole held-out set, sample, and write results, DataTree and figures."""
    history = result.history
    terms = bound_terms(trained, {}, split.test, jax.random.fold_in(key, 2))
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
        best = np.asarray(bound_terms(ceiling, {}, split.test, jax.random.fold_in(key, 2)).bits()["K"])
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

    betas = np.asarray(trained.betas())
    drawn = sample(trained, jax.random.fold_in(key, 3), num_samples, trajectory=True)
    samples = np.asarray(drawn.x0)
    results.update(experiment.data.sample_summary(split.standardiser.inverse(samples)))
    write_json(out / RESULTS_FILE, results)
    diagnostics.fit_datatree(samples, split.test, bits, history, betas).to_netcdf(out / "fit.nc", engine="h5netcdf")
    write_figures(experiment, trained, split, samples, out)
    m = min(1_000, num_samples, len(split.test))
    x0 = split.test[:m]
    chain = ForwardChain(jax.numpy.asarray(x0), trained.betas(), trained.event_ndim, family=trained.family)
    fwd = np.asarray(chain.sample(jax.random.fold_in(key, 4)))
    forward = np.concatenate([x0[None], np.moveaxis(fwd, 1, 0)])
    reverse = np.concatenate([samples[None, :m], np.moveaxis(np.asarray(drawn.trajectory[:m]), 1, 0)])
    if split.standardiser.per_column:  # data units would squash columns of different scales to a line
        diagnostics.plot_trajectories(forward, reverse, out / "trajectories.png", units="standardised units")
    else:
        raw = split.standardiser.inverse
        diagnostics.plot_trajectories(raw(forward), raw(reverse), out / "trajectories.png")
    diagnostics.plot_loss(history, out / "loss.png")
    initial = np.asarray(experiment.model(jax.random.key(0), trained.num_steps).schedule())
    diagnostics.plot_betas(betas, out / "betas.png", initial=initial)
    print_results(results, experiment)
    return results


def write_figures(
    experiment: Experiment, trained: AbstractDiffusion, split: Split, samples: np.ndarray, out: Path, prefix: str = ""
) -> None:
    """Samples beside held-out data in data units: ``samples.png`` and, for rows of numbers, the pair
    plot and the per-column marginals with the columns' names."""
    raw = split.standardiser.inverse  # figures in data units (images: pixel intensities)
    data, drawn = raw(split.test[: len(samples)]), raw(samples)
    diagnostics.plot_samples(data, drawn, out / f"{prefix}samples.png")
    if trained.event_ndim == 1 and trained.family.standardise:
        names = getattr(experiment.data, "column_names", None)
        diagnostics.plot_pairs(data, drawn, out / f"{prefix}pairs.png", names=names)
        diagnostics.plot_marginals(data, drawn, out / f"{prefix}marginals.png", names=names)


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
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    stop = f", stopped early at {results['steps_run']}" if results.get("stopped_early") else ""
    print(
        f"\n{experiment.name}: T = {results['num_steps_T']}, {results['steps']} steps{stop}, "
        f"{results['train_seconds']:.0f} s; parameters of step {results['best_step']} (best validation K)"
    )
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width)))
    if "K_discrete_bits_per_dim" in results:
        print(
            f"  discrete bits/dim of K (DDPM's convention, lower is better): {results['K_discrete_bits_per_dim']:.3f}"
        )
    if "valid_sample_fraction" in results:
        print(f"  samples that are true sequences: {100 * results['valid_sample_fraction']:.1f}%")


def _stored(run: Path, info: dict, key: str, copy: Path | None) -> str | None:
    """The run folder's copy of its script or data file (the exact bytes trained on), else the original."""
    original = info.get(key)
    if original is None:
        return None
    if copy is not None and copy.is_file():
        return str(copy)
    if not Path(original).is_file():
        raise FileNotFoundError(
            f"The {key} file {original!r} that {str(run)!r} was trained on is gone (moved or deleted), and the run "
            f"folder holds no copy. Put it back at that path, or edit `{key}` in {str(run / RUN_FILE)!r}."
        )
    digest = info.get(f"{key}_sha256")
    if digest is not None and _sha256(original) != digest:
        raise checkpoint.CheckpointError(
            f"The {key} file {original!r} changed since {str(run)!r} was trained on it (its SHA-256 differs from "
            f"run.json's). Restore the original file, or train a new run on this one."
        )
    return original


def load_run(run: str | Path) -> LoadedRun:
    """Rebuild a trained model from its run folder (``dpm sample``, ``dpm evaluate``, queries).

    The folder is self-contained: the model script and the data file are read from its copies (the
    originals may be moved, edited or deleted); runs written before the copies existed use the paths in
    run.json, checked against their SHA-256.
    """
    run = Path(run)
    if not (run / RUN_FILE).is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a run folder (no {RUN_FILE}); create one with `dpm fit SCRIPT --out DIR`."
        )
    info = json.loads((run / RUN_FILE).read_text())
    data_copy = run / DATA_COPY / Path(info["data"]).name if info.get("data") else None
    data = _stored(run, info, "data", data_copy)
    script = _stored(run, info, "script", run / SCRIPT_COPY)
    options = {"columns": info["columns"]} if info.get("columns") is not None else {}
    experiment = load_script(script, data, **options)
    diffusion, split = _build(experiment, info["num_steps"], info["seed"])
    config = TrainConfig(**info["train"])
    svi = make_svi(diffusion, config)
    like = svi.init(jax.random.key(0), jax.numpy.asarray(split.train[: config.batch_size]))
    spec = model_spec(experiment.name, diffusion, config, info.get("data_sha256"))
    best = run / BEST_CHECKPOINT
    state, _ = checkpoint.load(best if best.exists() and config.keep_best else run / CHECKPOINT, like, spec)
    expected = Standardiser.from_json(info["standardiser"])
    if not np.allclose(expected.scale, split.standardiser.scale):
        raise checkpoint.CheckpointError(f"The data of {str(run)!r} changed since training (standardiser differs).")
    return LoadedRun(experiment, diffusion.bind(svi.get_params(state)), split, info)
