"""What a new user waits for before anything happens: ``import dpm_ppl``, ``dpm --help``, and the first use of
the core and of the inference layer, each in a fresh interpreter as a user runs them.

    python -m benchmarks imports            # 10 interleaved repeats; rewrites the `imports` section of RESULTS.md

CPU time (user + system, the child's own rusage) is what the targets are stated in, because wall time on a
shared 2-core machine mostly measures the neighbours. Targets: ``import dpm_ppl`` under 2 s and ``dpm --help``
under 0.5 s of CPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import sections


HERE = Path(__file__).resolve().parent
MARKDOWN = HERE / "RESULTS.md"
DPM = str(Path(sys.executable).with_name("dpm"))

#: (label, command, target CPU seconds or None)
COMMANDS = (
    ("`python -c 'import dpm_ppl'`", [sys.executable, "-c", "import dpm_ppl"], 2.0),
    ("`dpm --help`", [DPM, "--help"], 0.5),
    (
        "first use of the core: `dpm_ppl.GaussianDiffusion`",
        [sys.executable, "-c", "import dpm_ppl; dpm_ppl.GaussianDiffusion"],
        None,
    ),
    ("first use of inference: `dpm_ppl.posterior`", [sys.executable, "-c", "import dpm_ppl; dpm_ppl.posterior"], None),
    (
        "the whole public API: `dir(dpm_ppl)` resolved",
        [sys.executable, "-c", "import dpm_ppl as d; [getattr(d, n) for n in dir(d)]"],
        None,
    ),
)


def _one(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "0"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def run(repeats: int) -> list[dict]:
    for _, command, _ in COMMANDS:  # warm the file cache and the bytecode once
        _one(command)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in COMMANDS}
    for _ in range(repeats):  # interleaved, so a burst of load hits every command alike
        for label, command, _ in COMMANDS:
            times[label].append(_one(command))
    rows = []
    for label, _, target in COMMANDS:
        cpu, wall = np.array(times[label]).T
        rows.append(
            {
                "what": label,
                "cpu": float(np.median(cpu)),
                "cpu_max": float(cpu.max()),
                "wall": float(np.median(wall)),
                "target": target,
            }
        )
    return rows


def section(rows: list[dict], repeats: int) -> str:
    from .__main__ import _git, _machine

    begin, end = sections.markers("imports")
    lines = [
        begin,
        "## Start-up: imports and `dpm --help` (`python -m benchmarks imports`)",
        "",
        f"Machine: {_machine()}; code {_git()}; {datetime.date.today().isoformat()}; "
        f"load average {os.getloadavg()[0]:.1f}; median of {repeats} fresh interpreters, interleaved.",
        "",
        "| what | CPU s (median) | CPU s (max) | wall s (median) | target (CPU) | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = "" if r["target"] is None else f"< {r['target']:g} s"
        met = "" if r["target"] is None else ("yes" if r["cpu"] < r["target"] else "no")
        lines.append(f"| {r['what']} | {r['cpu']:.2f} | {r['cpu_max']:.2f} | {r['wall']:.2f} | {target} | {met} |")
    lines += ["", end]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks imports", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=MARKDOWN)
    args = p.parse_args(argv)
    rows = run(args.repeats)
    text = section(rows, args.repeats)
    print(text)
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(sections.splice(old, text, "imports"))
    return rows


if __name__ == "__main__":
    main()
