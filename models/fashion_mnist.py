"""Fashion-MNIST: 28×28 clothing images, the MNIST recipe with the paper's full image network.

Not in the paper. The network is the CIFAR-10 layout of App. D.2.1 at the reference code's default sizes:
multi-scale convolutions at 3 scales (28, 14, 7; 4 layers of 20 filters) beside a dense pathway (4 × 500
tanh units, 2 features per pixel), two 1×1 layers of 20 units, J = 10 temporal bumps. T = 1000, learned β.

Data: `dpm_ppl.datasets.FashionMNIST`, the idx files of a Debian package (nothing is downloaded):

    apt-get install dataset-fashion-mnist
    dpm fit models/fashion_mnist.py                          # T = 1000 (a GPU job)
    dpm fit models/fashion_mnist.py --T 100 --steps 5000     # a CPU-sized run

bits/pixel = K/784.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import FashionMNIST
from dpm_ppl.nn import ImageNet


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.1))
    network = ImageNet((28, 28), num_steps, num_scales=3, key=key)
    return dpm.GaussianDiffusion((28, 28), schedule, network=network)


experiment = Experiment(
    name="fashion_mnist",
    data=FashionMNIST(),
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
