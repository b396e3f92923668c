"""Swiss roll: the paper's first experiment (§3.1.1, App. D.1.1; Table 1: K = 2.35 bits, K − L_null = 6.45 bits).

2-D points on a noisy spiral (generator in `dpm_ppl.datasets.SwissRoll`, density known), scaled to unit
variance; Gaussian diffusion with T = 40 and a learned β schedule started log-spaced (the harmonic
schedule erases the roll's thickness in one step); an MLP with a per-step readout.

    dpm fit models/swiss_roll.py
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, PaperRow, TrainConfig
from dpm_ppl.datasets import SwissRoll
from dpm_ppl.nn import MLPNet


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-6, beta_max=0.5))
    network = MLPNet(2, num_steps, width=128, depth=3, key=key)
    return dpm.GaussianDiffusion((2,), schedule, network=network)


experiment = Experiment(
    name="swiss_roll",
    data=SwissRoll(num_train=20_000, num_test=5_000),
    model=model,
    num_steps=40,
    train=TrainConfig(
        steps=200_000,
        batch_size=256,
        learning_rate=2e-3,
        steps_per_call=250,
        eval_every=25_000,
        checkpoint_every=25_000,
    ),
    paper=PaperRow(K_bits=2.35, K_minus_Lnull_bits=6.45),
)


if __name__ == "__main__":
    from dpm_ppl.cli import main

    main(["fit", __file__])
