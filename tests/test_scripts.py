"""Every model script runs end to end through the `dpm` command with tiny settings (numpyro's
test_examples pattern), and the CLI turns user mistakes into one clear line."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from dpm_ppl import GaussianDiffusion, load_run
from dpm_ppl import _gaussian as gaussian
from dpm_ppl.cli import main
from dpm_ppl.cli._experiment import load_script
from dpm_ppl.datasets import ImageData
from dpm_ppl.infer import discrete_bits_per_dim


ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "models").glob("*.py"))
TINY = ["--steps", "40", "--T", "5", "--num-samples", "200", "--no-progress"]
RESULT_KEYS = {"K_bits", "K_minus_Lnull_bits", "K_stderr_bits", "train_seconds", "steps"}


def _gaussian_csv(path: Path) -> None:
    """300 rows of correlated 3-D Gaussian data with a header line (models/tabular.py)."""
    x = np.random.default_rng(0).multivariate_normal([1.0, -2.0, 0.5], [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 4]], 300)
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")


def _bits_npy(path: Path) -> None:
    """300 rows of 8 correlated bits (models/binary.py)."""
    rng = np.random.default_rng(0)
    np.save(path, (rng.random((300, 1)) < 0.5) ^ (rng.random((300, 8)) < 0.1))


# scripts trained on the user's own file get a generated one
DATA_FILES = {"tabular": ("data.csv", _gaussian_csv), "binary": ("data.npy", _bits_npy)}
# scripts whose data the user provides and none is generated for here (the network is GPU-sized, too)
NEEDS_DATA = {"cifar10"}


def _skip_if_data_not_installed(script: Path) -> None:
    """Image scripts whose data set is not installed on this machine (MNIST, Fashion-MNIST: see
    `dpm_ppl.datasets._images`) are skipped with the install command."""
    if script.stem in NEEDS_DATA:
        pytest.skip(f"{script.name} trains on data the user gives (--data DIR)")
    if script.stem in DATA_FILES:
        return
    data = load_script(script).data
    if isinstance(data, ImageData) and data.missing() is not None:
        pytest.skip(data.missing())


_RUNS: dict[Path, Path] = {}
# every script but SLOW_FIT is fitted with tiny settings in the default suite; the full pipeline (sample,
# evaluate, kernel bounds, resume) runs there for these two, and for every script under `pytest -m slow`
PIPELINE = {"swiss_roll", "binary_heartbeat"}


def _fitted(script: Path, tmp_path_factory) -> Path:
    if script not in _RUNS:
        _skip_if_data_not_installed(script)
        out = tmp_path_factory.mktemp(script.stem)
        data = []
        if script.stem in DATA_FILES:
            name, write = DATA_FILES[script.stem]
            path = tmp_path_factory.mktemp(f"{script.stem}_data") / name
            write(path)
            data = ["--data", str(path)]
        assert main(["fit", str(script), "--out", str(out), *data, *TINY]) == 0
        _RUNS[script] = out
    return _RUNS[script]


# GPU-sized image networks (64×64 dead leaves, texture patches): even a tiny run takes 1–2 min on 2 cores
SLOW_FIT = {"dead_leaves", "textures"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(s, marks=pytest.mark.slow if s.stem in SLOW_FIT else (), id=s.stem) for s in SCRIPTS],
)
def fitted(request, tmp_path_factory) -> Path:
    return _fitted(request.param, tmp_path_factory)


@pytest.fixture(
    scope="module",
    params=[pytest.param(s, marks=() if s.stem in PIPELINE else pytest.mark.slow, id=s.stem) for s in SCRIPTS],
)
def run_dir(request, tmp_path_factory) -> Path:
    return _fitted(request.param, tmp_path_factory)


def test_fit_writes_results_figures_and_datatree(fitted):
    """`dpm fit` writes results.json with the documented keys, the figures and a readable DataTree."""
    run_dir = fitted
    results = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["steps"] == 40 and results["num_steps_T"] == 5
    assert np.isfinite(results["K_bits"]) and results["K_stderr_bits"] > 0
    for name in ("samples.png", "trajectories.png", "loss.png", "betas.png", "checkpoint.eqx", "run.json"):
        assert (run_dir / name).is_file(), name
    tree = xr.open_datatree(run_dir / "fit.nc", engine="h5netcdf")
    assert {"prior_predictive", "observed_data", "bound", "training", "schedule"} <= set(tree.children)
    assert tree["prior_predictive"]["x0"].shape[:2] == (1, 200)
    # the per-example bound in the DataTree is the one summarised in results.json
    np.testing.assert_allclose(float(tree["bound"]["K"].mean()), results["K_bits"], rtol=1e-5)


def test_heartbeat_reports_the_best_kernel_of_its_form(tmp_path_factory):
    """The heartbeat's support is known, so `dpm fit` also reports K of `BernoulliMixtureOracle` on the
    same held-out draws: above a 40-step network's K and below the truth."""
    results = json.loads(
        (_fitted(ROOT / "models" / "binary_heartbeat.py", tmp_path_factory) / "results.json").read_text()
    )
    assert results["oracle_minus_K_bits"] > 4 * results["oracle_minus_K_stderr_bits"] > 0
    assert results["oracle_K_bits"] <= results["true_loglik_bits"]
    assert results["oracle_K_bits"] == pytest.approx(results["K_bits"] + results["oracle_minus_K_bits"], abs=1e-4)


def test_image_runs_report_discrete_bits_per_dim(tmp_path_factory, tmp_path):
    """`dpm fit` and `dpm evaluate` on dequantised images report DDPM's discrete bits/dim,
    −log₂ p/d + log₂(scale) − log₂(bin width), for K and for the IS estimate."""
    run = _fitted(ROOT / "models" / "digits.py", tmp_path_factory)
    results = json.loads((run / "results.json").read_text())
    loaded = load_run(run)
    d, scale, width = loaded.diffusion.dim, results["data_scale"], loaded.experiment.data.bin_width
    K = xr.open_datatree(run / "fit.nc", engine="h5netcdf")["bound"]["K"].values
    want = np.mean(discrete_bits_per_dim(K * np.log(2), d, scale, width))
    assert results["K_discrete_bits_per_dim"] == pytest.approx(want, rel=1e-5)
    args = ["evaluate", str(run), "--num-trajectories", "8", "--num-data", "6", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    for name in ("K", "loglik_is"):
        assert ev[f"{name}_discrete_bits_per_dim"] == pytest.approx(
            -ev[f"{name}_bits"] / d + np.log2(scale) - np.log2(width), rel=1e-5
        )
    assert ev["loglik_is_discrete_bits_per_dim"] <= ev["K_discrete_bits_per_dim"] + 1e-5


def test_sample_command(run_dir, tmp_path):
    """`dpm sample RUN --trajectory` saves x⁰ in both units and whole trajectories x¹…x^T."""
    assert main(["sample", str(run_dir), "--num-samples", "64", "--trajectory", "--out", str(tmp_path)]) == 0
    saved = np.load(tmp_path / "samples.npz")
    event = saved["x0"].shape[1:]
    assert saved["x0"].shape[0] == 64 and saved["trajectory"].shape == (64, 5, *event)
    assert np.all(np.isfinite(saved["x0"]))


def test_evaluate_command(run_dir, tmp_path):
    """`dpm evaluate RUN` writes evaluation.json with the documented keys; IS is at least K on average."""
    args = ["evaluate", str(run_dir), "--num-trajectories", "32", "--num-data", "20", "--out", str(tmp_path)]
    assert main(args) == 0
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert {"K_bits", "loglik_is_bits", "loglik_is_stderr_bits", "khat_max", "khat_frac_over_0p7", "M"} <= set(ev)
    assert ev["M"] == 32
    # log p̂ ≥ K per trajectory set by Jensen, so their means too (up to float rounding)
    assert ev["loglik_is_bits"] >= ev["K_bits"] - 1e-4


def test_trained_kernel_respects_entropy_bounds(run_dir):
    """The trained reverse variance lies in [β̃_t, β_t] (paper §2.6, Eq 24) at every t and many xᵗ."""
    run = load_run(run_dir)
    d = run.diffusion
    if not isinstance(d, GaussianDiffusion):
        pytest.skip("Eq 24's variance bounds concern Gaussian kernels")
    betas = d.betas()
    kernel = d.reverse_kernel(betas)
    x0 = jnp.asarray(run.split.test[:256])
    for t in range(2, d.num_steps + 1):
        mean_t, var_t = gaussian.marginal(x0, t, betas)
        xt = mean_t + jnp.sqrt(var_t) * jax.random.normal(jax.random.key(t), x0.shape)
        _, var = jax.vmap(kernel, in_axes=(0, None))(xt, t)
        lower, upper = gaussian.posterior_variance(t, betas), betas[t - 1]
        # float32 rounding of exp/log: relative 1e-5
        assert bool(jnp.all(var >= lower * (1 - 1e-5))) and bool(jnp.all(var <= upper * (1 + 1e-5))), t


def test_resume_with_other_T_is_refused(run_dir, capsys):
    """Resuming a run with a different T names the spec field that differs."""
    info = json.loads((run_dir / "run.json").read_text())
    data = ["--data", info["data"]] if info.get("data") else []
    code = main(
        ["fit", info["script"], *data, "--out", str(run_dir), "--steps", "80", "--T", "6", "--resume", "--no-progress"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "num_steps" in err and "continues only the same run" in err


def test_unknown_script_is_a_clear_error(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.py"), "--out", str(tmp_path)]) == 2
    assert "No model script" in capsys.readouterr().err


def test_script_declaring_nothing_is_a_clear_error(tmp_path, capsys):
    script = tmp_path / "empty.py"
    script.write_text('"""A script that forgot its experiment."""\nx = 1\n')
    assert main(["fit", str(script), "--out", str(tmp_path)]) == 2
    assert "declares no `experiment" in capsys.readouterr().err


BAD_DATA_SCRIPT = """
import numpy as np
import equinox as eqx
from dpm_ppl.datasets import Dataset
from dpm_ppl import Experiment
from dpm_ppl import TrainConfig
import importlib.util, sys
spec = importlib.util.spec_from_file_location("swiss", {swiss!r})
swiss = importlib.util.module_from_spec(spec); spec.loader.exec_module(swiss)

class Bad(Dataset):
    @property
    def event_shape(self):
        return (2,)
    def raw(self, seed):
        x = np.zeros((10, 2)); x[3, 1] = {value}
        return x, x

experiment = Experiment("bad", Bad(), swiss.model, 5, TrainConfig(steps=2))
"""


@pytest.mark.parametrize("value", ["np.nan", "np.inf"])
def test_non_finite_data_is_a_clear_error(tmp_path, capsys, value):
    """NaN or infinite data stop `dpm fit` with the offending index, before any training."""
    script = tmp_path / "bad.py"
    script.write_text(BAD_DATA_SCRIPT.format(swiss=str(ROOT / "models" / "swiss_roll.py"), value=value))
    assert main(["fit", str(script), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "(3, 1)" in err
