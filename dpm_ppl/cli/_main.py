"""The ``dpm`` command: ``dpm fit SCRIPT``, ``dpm sample RUN``, ``dpm evaluate RUN``, ``dpm query SCRIPT --run RUN``.

Each command imports what it runs when it runs, so ``dpm --help`` (and a mistyped argument) answers without
loading JAX.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def _initialize_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize` for ``dpm fit --distributed``, before anything starts a JAX backend.

    Flags left out are found the way JAX documents: ``JAX_COORDINATOR_ADDRESS`` from the environment,
    and on SLURM, Open MPI or Kubernetes every setting is detected from the cluster.
    """
    explicit = {"--coordinator": args.coordinator, "--num-processes": args.num_processes}
    given = [flag for flag, value in {**explicit, "--process-id": args.process_id}.items() if value is not None]
    if not args.distributed:
        if given:
            raise ValueError(f"{', '.join(given)} only apply to multi-process training: add `--distributed`.")
        return
    import jax

    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )
    print(
        f"process {jax.process_index()} of {jax.process_count()}: training on {jax.device_count()} devices "
        f"({jax.local_device_count()} here)",
        file=sys.stderr,
    )


def _fit(args: argparse.Namespace) -> None:
    from ._run import fit_experiment

    _initialize_distributed(args)
    fit_experiment(
        args.script,
        args.out,
        steps=args.steps,
        seed=args.seed,
        num_steps=args.T,
        batch_size=args.batch_size,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        num_samples=args.num_samples,
        data=args.data,
        columns=args.columns,
    )


def _sample(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from ..infer._sample import sample
    from ._report import write_figures
    from ._run import load_run

    run = load_run(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "sample"
    out.mkdir(parents=True, exist_ok=True)
    drawn = sample(run.diffusion, jax.random.key(args.seed), args.num_samples, trajectory=args.trajectory)
    x0 = np.asarray(drawn.x0)
    arrays = {"x0": x0, "x0_data_units": run.split.standardiser.inverse(x0)}
    if drawn.trajectory is not None:
        arrays["trajectory"] = np.asarray(drawn.trajectory)
    tmp = out / "samples.tmp.npz"
    np.savez(tmp, **arrays)  # pyright: ignore[reportArgumentType]  # numpy's stub matches **arrays to allow_pickle
    os.replace(tmp, out / "samples.npz")
    write_figures(run.experiment, run.diffusion, run.split, x0, out)
    print(f"wrote {args.num_samples} samples and their figures to {out}/ (samples.npz, samples.png)")
    for name, value in run.experiment.data.sample_summary(arrays["x0_data_units"]).items():
        print(f"  {name}: {value:.4f}")


def _evaluate(args: argparse.Namespace) -> None:
    from ._evaluate import evaluate_run

    evaluate_run(
        args.run,
        num_trajectories=args.num_trajectories,
        split=args.split,
        num_data=args.num_data,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress,
    )


def _query(args: argparse.Namespace) -> None:
    from ._query_script import run_query

    run_query(
        args.script,
        args.run,
        args.out,
        method=args.method,
        num_data=args.num_data,
        seed=args.seed,
        progress=not args.no_progress,
        num_particles=args.num_particles,
        num_runs=args.num_runs,
        num_chains=args.num_chains,
        twist=args.twist,
        covariance=args.covariance,
        rejuvenate=args.rejuvenate,
        observations=args.observations,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpm", description="Diffusion probabilistic models as NumPyro programs.")
    p.add_argument(
        "--compile-cache", metavar="DIR",
        help="persistent XLA compilation cache: a folder, or `off` (default $JAX_COMPILATION_CACHE_DIR, "
        "else ~/.cache/dpm_ppl/jax)",
    )  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train a model script on the bound K and report it in bits")
    f.add_argument("script", help="a model script, e.g. models/swiss_roll.py")
    f.add_argument("--data", help="your data file (.npy, .npz or .csv) for models/tabular.py or models/binary.py")
    f.add_argument("--out", help="the run folder (default runs/<name>)")
    f.add_argument("--steps", type=_positive, help="training steps (default: the script's)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--T", type=_positive, help="diffusion steps T (default: the script's)")
    f.add_argument("--batch-size", type=_positive)
    f.add_argument("--num-samples", type=_positive, default=5_000, help="samples drawn for figures")
    f.add_argument(
        "--columns", help="models/tabular.py: the columns to model, names or indices, comma-separated (e.g. 1,2,-1)"
    )
    f.add_argument("--resume", action="store_true", help="continue the same run from the run folder's checkpoint")
    f.add_argument(
        "--force", action="store_true", help="write into a folder holding another run (its files are deleted)"
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument(
        "--distributed", action="store_true",
        help="train across processes/hosts (jax.distributed.initialize); start one `dpm fit` per process",
    )  # fmt: skip
    f.add_argument("--coordinator", help="with --distributed: HOST:PORT of process 0 (else from the environment)")
    f.add_argument("--num-processes", type=_positive, help="with --distributed: how many processes in all")
    f.add_argument("--process-id", type=int, help="with --distributed: this process's index, 0 … N−1")
    f.set_defaults(func=_fit)

    s = sub.add_parser("sample", help="draw exact samples from a trained run")
    s.add_argument("run", help="a run folder written by `dpm fit`")
    s.add_argument("--num-samples", type=_positive, default=1_000)
    s.add_argument("--trajectory", action="store_true", help="also save whole reverse trajectories")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="where to write samples.npz and the figures (default RUN/sample)")
    s.set_defaults(func=_sample)

    e = sub.add_parser("evaluate", help="estimate log p(x⁰) by importance sampling over forward trajectories")
    e.add_argument("run", help="a run folder written by `dpm fit`")
    e.add_argument("--num-trajectories", type=_positive, default=1_000, help="M, trajectories per datum")
    e.add_argument(
        "--split", choices=("test", "val", "train"), default="test",
        help="which data to evaluate (read from the run folder; files of val and train are suffixed _val, _train)",
    )  # fmt: skip
    e.add_argument("--num-data", type=_positive, help="evaluate the first N data of the split (default: all)")
    e.add_argument("--chunk-size", type=_positive, default=128, help="trajectories per datum evaluated at once")
    e.add_argument("--batch-size", type=_positive, default=64, help="data per compiled call")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="where to write evaluation.json, likelihood.nc, khat.png (default: the run folder)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_evaluate)

    q = sub.add_parser("query", help="sample a posterior p(x⁰)·r(x⁰) of a query script on a trained run")
    q.add_argument("script", help="a query script, e.g. inference/denoise_swiss_roll.py")
    q.add_argument("--run", required=True, help="a run folder written by `dpm fit`")
    q.add_argument("--out", help="where to write query.json, posterior.nc and figures (default RUN/query_NAME)")
    q.add_argument("--method", choices=("perturbed", "smc", "nuts"), help="the sampler (default: the script's)")
    q.add_argument("--num-data", type=_positive, help="how many data to query (default: the script's)")
    q.add_argument(
        "--observations", metavar="FILE",
        help="your own observations in data units instead of the script's: an .npz of arrays named after the "
        "query model's arguments, or a .csv/.npy table for its single argument (NaN where the script allows it)",
    )  # fmt: skip
    q.add_argument("--num-particles", type=_positive, help="particles per run and datum (smc, perturbed)")
    q.add_argument("--num-runs", type=_positive, help="independent runs (smc, perturbed): log Z's error bar")
    q.add_argument("--num-chains", type=_positive, help="NUTS chains")
    q.add_argument("--twist", choices=("smoothed", "tds", "noisy"), help="SMC's intermediate targets")
    q.add_argument(
        "--covariance", choices=("auto", "jacobian", "diagonal"),
        help="SMC's smoothed twist: Cov[x0 | xt] from the denoiser's Jacobian or the kernel's diagonal",
    )  # fmt: skip
    q.add_argument("--rejuvenate", type=int, help="SMC: MALA moves per particle and step (Gaussian models)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_query)
    return p


def _enable_compile_cache(path: str | None) -> None:
    """The cache at ``path``, ``off``, or (``None``) at the default folder, where a failure only warns."""
    if path == "off":
        return
    from . import _compile_cache as compile_cache

    try:
        compile_cache.enable(path)
    except OSError as err:
        if path is not None:
            raise
        print(f"dpm: warning: {err} Going on without the cache.", file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None  # SIGTERM ends it as Ctrl-C does
    try:
        _enable_compile_cache(args.compile_cache)
        args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, no traceback
        from ..infer._train import TrainingInterrupted

        if os.environ.get("DPM_DEBUG"):
            raise
        if isinstance(err, TrainingInterrupted):
            hint = getattr(err, "resume_command", None)
            print(f"dpm {args.command}: {err}" + (f"\nresume with: {hint}" if hint else ""), file=sys.stderr)
        else:
            print(f"dpm {args.command}: interrupted ({err or 'SIGINT'}) before it finished.", file=sys.stderr)
        return 130
    except (ValueError, OSError, TypeError, FloatingPointError) as err:
        if os.environ.get("DPM_DEBUG"):
            raise
        print(f"dpm {args.command}: error: {err}\n(set DPM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
