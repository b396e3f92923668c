"""Textures: the stand-in for the paper's bark (Table 1: K = −0.55 bits/pixel, K − L_null = 1.5 bits/pixel).

The paper's bark images (Lazebnik et al. 2005, T01–T04) are not available offline; this script trains on random
16×16 patches of scikit-image's ``brick`` texture (`dpm_ppl.datasets.Textures`; ``grass`` and ``gravel`` too:
copy the script), held-out patches from a part of the texture not trained on. Its numbers are therefore not
comparable with the paper's row. As for bark: T = 500, learned β, multi-scale convolution only (4 scales,
4 layers of 20 filters), two 1×1 layers of 20 units, J = 10 bumps.

    pip install scikit-image
    dpm fit models/textures.py                       # T = 500 (a GPU job)
    dpm fit models/textures.py --T 100 --steps 5000  # a CPU-sized run

bits/pixel = K/256.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import Textures
from dpm_ppl.nn import ImageNet


SIZE = 16


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.1))
    network = ImageNet((SIZE, SIZE), num_steps, num_scales=4, dense_depth=0, key=key)
    return dpm.GaussianDiffusion((SIZE, SIZE), schedule, network=network)


experiment = Experiment(
    name="textures_brick",
    data=Textures(texture="brick", size=SIZE, num_test=1_000),
    model=model,
    num_steps=500,
    train=TrainConfig(
        steps=100_000,
        batch_size=128,
        learning_rate=1e-3,
        steps_per_call=250,
        eval_every=10_000,
        checkpoint_every=10_000,
        eval_size=1_000,
    ),
)


if __name__ == "__main__":
    from dpm_ppl.cli import main

    main(["fit", __file__])
