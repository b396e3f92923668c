"""Run every benchmark, print the tables and rewrite benchmarks/RESULTS.md.

python -m benchmarks            # the full run: ~15 min on 2 shared CPU cores
python -m benchmarks --quick    # fewer repeats and sizes: ~5 min on 2 idle cores, ~10 when shared
python -m benchmarks --no-peer  # without the PyTorch peer (no Python 3.11 venv needed)
python -m benchmarks posterior  # the posterior benchmark (benchmarks/posterior.py; its own section of RESULTS.md)
python -m benchmarks imports    # start-up: `import dpm_ppl` and `dpm --help` (benchmarks/imports.py)
python -m benchmarks tabular    # your own tables: defaults against a Gaussian and a GMM (benchmarks/tabular.py)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from . import likelihood, report, sections, suite
from . import peer as peer_mod


HERE = Path(__file__).resolve().parent


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "dpm_ppl"], capture_output=True, text=True, cwd=HERE.parent
        )
        return head.stdout.strip() + (" + uncommitted changes in dpm_ppl/" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["posterior"]:
        from . import posterior

        return posterior.main(argv[1:])
    if argv[:1] == ["imports"]:
        from . import imports

        return imports.main(argv[1:])
    if argv[:1] == ["tabular"]:
        from . import tabular

        return tabular.main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes (~5 min on 2 idle cores)")
    p.add_argument("--preset", choices=sorted(suite.PRESETS), help=argparse.SUPPRESS)  # "tiny" for the tests
    p.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the results (Markdown)")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    args = p.parse_args(argv)
    preset = args.preset or ("quick" if args.quick else "full")
    settings = suite.PRESETS[preset]
    command = "python -m benchmarks" + (" --quick" if args.quick else f" --preset {preset}" if args.preset else "")

    import jax

    start = time.perf_counter()
    load_start = f"{os.getloadavg()[0]:.1f}"
    likelihood_rows = []
    if settings.lik_Ms:
        # first, while this process is small: Linux carries a parent's peak RSS into its children's ru_maxrss
        _log(f"likelihood throughput and memory: M = {settings.lik_Ms}")
        lk = dict(T=settings.train_T, num_data=8, chunk_size=64, batch_size=8)
        rows = likelihood.run(list(settings.lik_Ms), **lk)
        likelihood_rows = [{**r, "num_data": lk["num_data"], "chunk_size": lk["chunk_size"]} for r in rows]
    peer, peer_info, skipped = None, {}, "--no-peer"
    if not args.no_peer:
        try:
            peer = peer_mod.PeerClient(peer_mod.ensure_venv(log=_log))
            peer_info = peer(cmd="info")
        except peer_mod.PeerUnavailable as e:
            skipped = str(e)
            _log(f"PyTorch peer not available: {e}")
    try:
        results = suite.run_all(settings, peer, _log)
    finally:
        if peer is not None:
            peer.close()
    results["likelihood_memory"] = likelihood_rows
    versions = {name: version(name) for name in ("jax", "jaxlib", "numpyro", "equinox", "optax", "numpy")}
    versions = f"Python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items())
    if peer_info:
        versions += f"; peer: Python {peer_info['python']}, torch {peer_info['torch']}"
    devices = jax.devices()
    gpus = [d for d in devices if d.platform != "cpu"]
    results["meta"] = {
        "command": command,
        "preset": preset,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "machine": _machine(),
        "load_start": load_start,
        "load_end": f"{os.getloadavg()[0]:.1f}",
        "versions": versions,
        "device": ", ".join(str(d) for d in devices),
        "gpu": (
            f"Run on {gpus[0]}: the tables above are GPU rows."
            if gpus
            else "No GPU was lent to this task: every row above is CPU. GPU rows come from the same command "
            "on a machine with one (JAX picks the GPU; the PyTorch peer stays on CPU)."
        ),
        "peer_skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    results["settings"] = report.settings_dict(settings)
    results["bars"] = report.bars(results)
    text = report.render(results)
    print(text)
    # the sections of `python -m benchmarks posterior` and `... tabular` are kept as they were
    args.out.write_text(sections.keep_sections(text, args.out.read_text()) if args.out.exists() else text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    _log(f"wrote {args.out} ({results['meta']['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
