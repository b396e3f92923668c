"""The acceptance bars of the paper's two low-dimensional experiments, at the README's defaults.

Each test runs a model script end to end through the `dpm` command with its default settings (minutes
on 2 CPU cores), so both are marked slow: `.ci/env pytest -m slow`. The numbers they assert are the ones
the README reports.
"""

import json

import pytest
from helpers import N_SE

from dpm_ppl.cli import main


pytestmark = pytest.mark.slow

PAPER_HEARTBEAT_K_BITS = -2.414  # Table 1, bits per sequence
MIN_VALID_FRACTION = 0.99


def test_binary_heartbeat_reaches_the_papers_bound_and_samples_true_sequences(tmp_path):
    """Held-out K ≥ −2.414 bits/seq (Table 1) and at least 99% of samples are one of the 5 sequences.

    10,000 samples rather than the bar's 1,000: the fixed last step alone corrupts ~0.3% of them (a
    base-rate time reversal of β₁ = 1/2000 flips 4 · 0.8β₁ + 16 · 0.2β₁ = 0.0032 bits per sequence), so
    at 1,000 the measured 99.4% would sit only 1.5 binomial standard errors above the bar; at 10,000 it
    sits ~5 above it.
    """
    out = tmp_path / "heartbeat"
    assert (
        main(["fit", "models/binary_heartbeat.py", "--out", str(out), "--num-samples", "10000", "--no-progress"]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["K_bits"] >= PAPER_HEARTBEAT_K_BITS, results
    assert results["K_bits"] <= results["true_loglik_bits"] + N_SE * results["K_stderr_bits"], results
    assert results["valid_sample_fraction"] >= MIN_VALID_FRACTION, results
    # the best kernel of the paper's form (independent bits) bounds what training reaches, on the same draws
    assert results["oracle_minus_K_bits"] >= -N_SE * results["oracle_minus_K_stderr_bits"], results


def test_swiss_roll_importance_sampling_is_tighter_than_K_and_below_the_truth(tmp_path):
    """On the trained Swiss roll, M = 1000: the IS estimate exceeds K by more than N_SE paired standard
    errors and does not exceed the generator's true log-likelihood (quadrature) by more than 2 of them."""
    run, evaluation = tmp_path / "swiss_roll", tmp_path / "evaluation"
    assert main(["fit", "models/swiss_roll.py", "--out", str(run), "--no-progress"]) == 0
    args = ["evaluate", str(run), "--num-trajectories", "1000", "--num-data", "1000", "--out", str(evaluation)]
    assert main([*args, "--no-progress"]) == 0
    r = json.loads((evaluation / "evaluation.json").read_text())
    assert r["M"] == 1000 and r["num_data"] == 1000
    assert r["is_minus_K_bits"] > N_SE * r["is_minus_K_stderr_bits"], r
    assert r["truth_minus_is_bits"] >= -2.0 * r["truth_minus_is_stderr_bits"], r
