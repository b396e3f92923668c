"""The benchmarks compare like with like: the hand-written JAX model computes dpm_ppl's numbers from the
same parameters and key, the PyTorch peer's loss matches, and `python -m benchmarks` runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import dpm_ppl as dpm


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed: the checkout's
from benchmarks import handwritten as hw  # noqa: E402
from benchmarks import peer as peer_mod  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
from benchmarks.suite import Setup  # noqa: E402


T, BATCH = 6, 16


@pytest.fixture(scope="module")
def setup():
    return Setup(T, BATCH)


# everything jitted: eager NumPyro and JAX compile hundreds of one-op programs


def test_handwritten_loss_equals_diffusion_elbo(setup):
    key, d = jax.random.key(5), setup.diffusion
    elbo = jax.jit(lambda p, k, x: dpm.DiffusionELBO().loss(k, p, d.model, d.guide, x))(setup.params, key, setup.x)
    # float32 sums over the batch in another order: agreement to ~1e-6 relative
    np.testing.assert_allclose(jax.jit(hw.loss)(setup.hand, key, setup.x), elbo, rtol=1e-4)


def test_handwritten_sampler_equals_dpm_sample(setup):
    key = jax.random.key(3)
    bound = setup.diffusion.bind(setup.params)
    ours = dpm.sample(bound, key, 8).x0
    np.testing.assert_allclose(jax.jit(hw.sample, static_argnums=2)(setup.hand, key, 8), ours, atol=1e-5)
    # without the trajectory (`ReverseChain.sample_x1`, what the benchmark times) the same draw as with it
    np.testing.assert_allclose(dpm.sample(bound, key, 8, trajectory=True).x0, ours, atol=1e-6)


def test_bench_command_writes_results(tmp_path):
    out, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    results = main(["--preset", "tiny", "--no-peer", "--out", str(out), "--json", str(raw)])
    text = out.read_text()
    assert text.startswith("# Benchmark results") and "## Bars" in text and "sampling (T=8, 16 samples)" in text
    assert "No GPU was lent" in text or "GPU rows" in text
    row = results["abstraction"][0]
    assert row["ratio_hand"]["n"] == 2 and row["dpm"]["median"] > 0
    assert json.loads(raw.read_text())["meta"]["preset"] == "tiny"


@pytest.mark.skipif(
    not (peer_mod.VENV / "bin" / "python").exists(), reason="no PyTorch peer venv (python -m benchmarks)"
)
def test_torch_peer_loss_matches(setup, tmp_path):
    t, noise = jax.jit(hw._draws, static_argnums=(1, 2, 3))(jax.random.key(5), BATCH, T, setup.x.shape)
    npz = peer_mod.write_npz(tmp_path / "w.npz", setup.hand, setup.x, setup.peer_config(), {"t": t, "noise": noise})
    peer = peer_mod.PeerClient(peer_mod.VENV / "bin" / "python")
    try:
        peer(cmd="setup", name="w", npz=str(npz))
        torch_loss = peer(cmd="check", name="w")["loss"]
    except (peer_mod.PeerUnavailable, subprocess.SubprocessError) as e:
        pytest.skip(f"peer failed to start: {e}")
    finally:
        peer.close()
    np.testing.assert_allclose(torch_loss, jax.jit(hw.loss_from_draws)(setup.hand, setup.x, t, noise), rtol=1e-3)
