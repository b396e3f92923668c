"""Your own tables on defaults: `models/tabular.py` against the baselines a user would try first.

    python -m benchmarks tabular                     # wine, iris, diabetes, moons (20,000 rows); ~1 h on 2 cores
    python -m benchmarks tabular --datasets iris     # one table
    python -m benchmarks tabular --report-only       # rewrite the RESULTS.md section from the recorded rows

Each table is written as a CSV with its column names and fitted exactly as a user would,
``dpm fit models/tabular.py --data FILE`` with every default, then ``dpm evaluate`` (importance
sampling, M trajectories per held-out row). The baselines are fitted on the same training rows and
scored on the same held-out rows: a full-covariance Gaussian and a Gaussian mixture whose number of
components is chosen by 5-fold cross-validation on the training rows. The target: the held-out IS
log-likelihood at least that of the better baseline, within 2 standard errors of the paired difference.

Rows are appended to ``benchmarks/tabular_results.jsonl`` as each table finishes (a rerun skips the
tables already there unless ``--rerun``); the section between the ``tabular`` markers of RESULTS.md
is rewritten from them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .sections import markers, splice


HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "models" / "tabular.py"
RESULTS = HERE / "tabular_results.jsonl"
MARKDOWN = HERE / "RESULTS.md"
BEGIN, END = markers("tabular")


def table(name: str) -> tuple[np.ndarray, list[str]]:
    """A bundled table (no download): scikit-learn's wine, iris and diabetes, and two-moons of 20,000 rows."""
    from sklearn import datasets

    if name == "moons":
        x, _ = datasets.make_moons(n_samples=20_000, noise=0.1, random_state=0)
        return x, ["x", "y"]
    loaded = {"wine": datasets.load_wine, "iris": datasets.load_iris, "diabetes": datasets.load_diabetes}[name]()
    return loaded.data, [str(c).replace(" ", "_").replace(",", "") for c in loaded.feature_names]


DATASETS = ("wine", "iris", "diabetes", "moons")


def write_csv(x: np.ndarray, names: list[str], path: Path) -> None:
    np.savetxt(path, x, delimiter=",", header=",".join(names), comments="", fmt="%.10g")


def run_table(name: str, work: Path, num_trajectories: int) -> dict:
    """Fit and evaluate one table on the defaults; the row of the results table."""
    from dpm_ppl.cli._evaluate import evaluate_run
    from dpm_ppl.cli._run import fit_experiment

    x, names = table(name)
    csv = work / f"{name}.csv"
    write_csv(x, names, csv)
    run = work / f"run_{name}"
    start = time.perf_counter()
    fitted = fit_experiment(SCRIPT, run, data=csv, progress=False, num_samples=2_000, force=True)
    evaluated = evaluate_run(run, num_trajectories=num_trajectories, progress=False)
    base = evaluated["baselines"]
    best = max(base, key=lambda k: base[k]["bits"])
    diff, se = base[best]["loglik_is_minus_bits"], base[best]["loglik_is_minus_stderr_bits"]
    return {
        "dataset": name,
        "rows": len(x),
        "columns": x.shape[1],
        "num_train": fitted["num_train"],
        "num_heldout": fitted["num_heldout"],
        "steps": fitted["steps"],
        "steps_run": fitted["steps_run"],
        "best_step": fitted["best_step"],
        "train_seconds": fitted["train_seconds"],
        "seconds": time.perf_counter() - start,
        "K_bits": evaluated["K_bits"],
        "K_stderr_bits": evaluated["K_stderr_bits"],
        "is_bits": evaluated["loglik_is_bits"],
        "is_stderr_bits": evaluated["loglik_is_data_stderr_bits"],
        "khat_frac_over_0p7": evaluated["khat_frac_over_0p7"],
        "gaussian_bits": base["gaussian"]["bits"],
        "gmm_bits": base["gmm"]["bits"],
        "gmm_k": base["gmm"].get("k"),
        "best_baseline": best,
        "is_minus_best_bits": diff,
        "is_minus_best_stderr_bits": se,
        "meets_target": bool(diff >= -2 * se),
        "M": num_trajectories,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def render(rows: list[dict], meta: str) -> str:
    L = [BEGIN, "## Your own tables on defaults (`python -m benchmarks tabular`)", "", meta, ""]
    L += [
        "Held-out bits per row in standardised units (a full-covariance Gaussian and a CV-chosen Gaussian "
        "mixture fitted on the same training rows); IS − best is paired over the held-out rows, ± one standard "
        "error. Target: IS − best ≥ −2 SE.",
        "",
        "| table | rows × cols | steps (best) | train s | K | IS | Gaussian | GMM (k) | IS − best | k̂ > 0.7 | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stop = f"{r['steps_run']} ({r['best_step']})"
        L.append(
            f"| {r['dataset']} | {r['rows']} × {r['columns']} | {stop} | {r['train_seconds']:.0f} | "
            f"{r['K_bits']:.2f} ± {r['K_stderr_bits']:.2f} | {r['is_bits']:.2f} ± {r['is_stderr_bits']:.2f} | "
            f"{r['gaussian_bits']:.2f} | {r['gmm_bits']:.2f} ({r['gmm_k']}) | "
            f"{r['is_minus_best_bits']:+.3f} ± {r['is_minus_best_stderr_bits']:.3f} | "
            f"{100 * r['khat_frac_over_0p7']:.0f}% | {'met' if r['meets_target'] else '**not met**'} |"
        )
    L += ["", END]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks tabular", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    p.add_argument("--num-trajectories", type=int, default=1_000, help="M for the IS log-likelihood")
    p.add_argument("--rerun", action="store_true", help="run the tables again even if recorded")
    p.add_argument("--report-only", action="store_true", help="only rewrite RESULTS.md from the recorded rows")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--markdown", type=Path, default=MARKDOWN)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown --datasets {unknown}; choose from {', '.join(DATASETS)}")
    rows = {r["dataset"]: r for r in _load(args.results)}
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="dpm_tabular_") as work:
            for name in names:
                if name in rows and not args.rerun:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
                rows[name] = run_table(name, Path(work), args.num_trajectories)
                with args.results.open("a") as f:
                    f.write(json.dumps(rows[name]) + "\n")
    from . import __main__ as bench

    ordered = [rows[n] for n in DATASETS if n in rows]
    meta = f"Machine: {bench._machine()}; code {bench._git()}; M = {args.num_trajectories}."
    section = render(ordered, meta)
    print(section)
    old = args.markdown.read_text() if args.markdown.exists() else "# Benchmark results\n"
    args.markdown.write_text(splice(old, section, "tabular"))
    return ordered
