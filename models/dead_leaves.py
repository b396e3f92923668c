"""Dead leaves (paper §3.2, Table 1: K = 1.489 bits/pixel, K − L_null = 3.536 bits/pixel; Table 2).

The paper trained on Theis et al. (2012)'s dead-leaves data, which are not available; this script uses the
documented generator `dpm_ppl.datasets.DeadLeaves` (16×16 images of occluding discs with radii ∝ r⁻³, grey levels
quantised to 256 and dequantised), so its numbers are not comparable with the paper's row (printed beside
them for orientation only). Network: multi-scale convolution only (App. D.2.1; the pathway is not stated for
dead leaves), 4 scales (16, 8, 4, 2), 4 layers of 20 filters, two 1×1 layers of 20 units, J = 10 bumps.
T = 1000, learned β.

    dpm fit models/dead_leaves.py                      # T = 1000 (a GPU job)
    dpm fit models/dead_leaves.py --T 100 --steps 5000 # a CPU-sized run

bits/pixel = K/256.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, PaperRow, TrainConfig
from dpm_ppl.datasets import DeadLeaves
from dpm_ppl.nn import ImageNet


SIZE = 16


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.1))
    network = ImageNet((SIZE, SIZE), num_steps, num_scales=4, dense_depth=0, key=key)
    return dpm.GaussianDiffusion((SIZE, SIZE), schedule, network=network)


experiment = Experiment(
    name="dead_leaves",
    data=DeadLeaves(size=SIZE),
    model=model,
    num_steps=1000,
    train=TrainConfig(
        steps=100_000,
        batch_size=128,
        learning_rate=1e-3,
        steps_per_call=250,
        eval_every=10_000,
        checkpoint_every=10_000,
        eval_size=1_000,
    ),
    # Table 1 per pixel, times d = 256 pixels: K and K − L_null in bits per image (another data set: see above)
    paper=PaperRow(K_bits=1.489 * SIZE * SIZE, K_minus_Lnull_bits=3.536 * SIZE * SIZE),
)


if __name__ == "__main__":
    from dpm_ppl.cli import main

    main(["fit", __file__])
