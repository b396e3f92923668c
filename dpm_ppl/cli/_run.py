"""A run folder: fit a model script end to end, write its results, and load it back.

``fit_experiment`` trains on the training rows (keeping the parameters of the best validation K), then
reports the run (`dpm_ppl.cli._report`: the held-out bound in bits beside the paper's Table 1 row, the
generator's true log-likelihood and the density baselines a user can act on, samples, figures), writing into
``out``:

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
import os
import shlex
import shutil
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from .._model import AbstractDiffusion
from ..datasets._base import Split, Standardiser
from ..infer import _checkpoint as checkpoint
from ..infer._train import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    TrainConfig,
    TrainingInterrupted,
    fit,
    make_svi,
)
from ._experiment import Experiment, load_script
from ._json import write_json
from ._report import RESULTS_FILE, report


__all__ = ["LoadedRun", "RunFolderError", "fit_experiment", "load_run", "prepare_folder"]

RUN_FILE = "run.json"
SCRIPT_COPY = "script.py"
DATA_COPY = "data"
# what makes two runs the same run (`prepare_folder`)
IDENTITY = ("name", "script_sha256", "data_sha256", "columns", "num_steps", "seed", "train", "spec")
# every file or folder a command writes into a run folder, besides checkpoints, queries and data copies
OUTPUTS = (
    RUN_FILE, RESULTS_FILE, SCRIPT_COPY, DATA_COPY, "fit.nc", "samples.png", "pairs.png", "marginals.png",
    "trajectories.png", "loss.png", "betas.png", "evaluation.json", "likelihood.nc", "khat.png", "sample",
    "samples.npz",  # where `dpm sample` wrote before it had its own folder
)  # fmt: skip


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
    and `dpm_ppl.TrainingInterrupted` raised, carrying the command that resumes.
    After `jax.distributed.initialize` every process trains (data parallel, see `dpm_ppl.fit`);
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


def _stored(run: Path, info: dict, key: str, copy: Path | None) -> str | None:
    """The run folder's copy of its script or data file (the exact bytes trained on), else the original."""
    original = info.get(key)
    if original is None:
        return None
    digest = info.get(f"{key}_sha256")
    if copy is not None and copy.is_file():
        if digest is not None and _sha256(copy) != digest:
            raise checkpoint.CheckpointError(
                f"The copy {str(copy)!r} of the {key} file differs from the one {str(run)!r} was trained on (its "
                f"SHA-256 differs from run.json's): it was edited. Restore it, or train a new run."
            )
        return str(copy)
    if not Path(original).is_file():
        raise FileNotFoundError(
            f"The {key} file {original!r} that {str(run)!r} was trained on is gone (moved or deleted), and the run "
            f"folder holds no copy. Put it back at that path, or edit `{key}` in {str(run / RUN_FILE)!r}."
        )
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
    assert script is not None  # every run.json names its script (`dpm fit` writes it)
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
