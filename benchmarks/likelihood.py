"""Throughput and peak memory of the importance-sampled log-likelihood (`dpm_ppl.log_likelihood`).

The Swiss-roll model (d = 2, T = 40, `MLPNet` width 128, depth 3, untrained: throughput does not depend
on the weights) on held-out Swiss-roll points. Each M runs in its own process, so its peak resident
memory (``resource.getrusage``; on a GPU also the device's ``peak_bytes_in_use``) is its own. The first
call compiles; the second, with another key, is timed.

    python benchmarks/likelihood.py                       # M = 64, 256, 1024, 4096 on 16 data
    python benchmarks/likelihood.py --Ms 32 128 512 --num-data 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> dict:
    """Run one M in this process and return its timings and memory."""
    import jax

    from dpm_ppl._model import GaussianDiffusion
    from dpm_ppl._schedules import GeometricSchedule
    from dpm_ppl.datasets import SwissRoll
    from dpm_ppl.infer._likelihood import log_likelihood
    from dpm_ppl.nn._mlp import MLPNet

    T = args.T
    network = MLPNet(2, T, width=128, depth=3, key=jax.random.key(0))
    schedule = GeometricSchedule(T, beta_min=1e-5, beta_max=0.5)
    diffusion = GaussianDiffusion((2,), schedule, network=network, trainable=False)
    x0 = SwissRoll(num_train=1_000, num_test=args.num_data).split(0).test
    settings = dict(num_trajectories=args.worker, chunk_size=args.chunk_size, batch_size=args.batch_size)
    start = time.perf_counter()
    log_likelihood(diffusion, x0, jax.random.key(1), **settings)
    first = time.perf_counter() - start
    start = time.perf_counter()
    est = log_likelihood(diffusion, x0, jax.random.key(2), **settings)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "M": args.worker,
        "compile_and_first_s": first,
        "seconds": seconds,
        "trajectory_steps_per_s": len(x0) * args.worker * T / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_peak_mb": stats.get("peak_bytes_in_use", float("nan")) / 2**20,
        # all trajectories and the network's hidden activations at every (trajectory, t) at once, float32
        "unchunked_mb": len(x0) * args.worker * T * (2 + 128 * 3) * 4 / 2**20,
        "mean_loglik_nats": float(est.log_p_hat.mean()),
        "device": str(jax.devices()[0]),
    }


def run(Ms: list[int], *, T: int, num_data: int, chunk_size: int, batch_size: int) -> list[dict]:
    """One worker process per M (so that each peak RSS is its own); returns their rows."""
    common = ["--T", str(T), "--num-data", str(num_data), "--chunk-size", str(chunk_size)]
    common += ["--batch-size", str(batch_size)]
    rows = []
    for M in Ms:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(M), *common], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--Ms", type=int, nargs="+", default=[64, 256, 1024, 4096], help="trajectories per datum")
    p.add_argument("--T", type=int, default=40)
    p.add_argument("--num-data", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return
    rows = run(args.Ms, T=args.T, num_data=args.num_data, chunk_size=args.chunk_size, batch_size=args.batch_size)
    print(
        f"log_likelihood: Swiss roll, T = {args.T}, {args.num_data} data, chunk {args.chunk_size} trajectories "
        f"x batch {args.batch_size} data, on {rows[0]['device']}"
    )
    header = (
        "M",
        "compile+1st (s)",
        "timed (s)",
        "traj-steps/s",
        "peak RSS (MB)",
        "device peak (MB)",
        "unchunked (MB, est.)",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        cells = (
            f"{r['M']}",
            f"{r['compile_and_first_s']:.2f}",
            f"{r['seconds']:.2f}",
            f"{r['trajectory_steps_per_s']:.3g}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['device_peak_mb']:.0f}",
            f"{r['unchunked_mb']:.0f}",
        )
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
