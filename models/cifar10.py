"""CIFAR-10 (paper Table 1 with footnote 3: K = 5.4 ± 0.2 bits/pixel, K − L_null = 11.5 ± 0.2 bits/pixel, where
"pixel" sums the 3 colour channels).

Data: the standard python batches, which you download and unpack yourself (nothing is downloaded here):

    dpm fit models/cifar10.py --data DIR            # DIR = cifar-10-batches-py or the folder holding it
    dpm fit models/cifar10.py --data DIR --T 100 --steps 2000   # a (slow) CPU-sized run

Images 3×32×32 channels first, 256 levels dequantised with uniform noise then one global scale to unit variance
(`dpm_ppl.datasets.Cifar10`). Network: the paper's CIFAR-10 layout (App. D.2.1), dense pathway in parallel with
multi-scale convolutions, at the sizes of the reference code's CIFAR-10 README command (6 conv layers of 100
filters, here at 3 scales; 6 dense layers of 1000 units read out as 5 features per pixel; four 1×1 layers of
100 units; J = 10 bumps). T = 1000, learned β, batch 200.

bits/pixel (the paper's: per pixel over its 3 channels) = K/1024; bits/dim = K/3072.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, PaperRow, TrainConfig
from dpm_ppl.datasets import Cifar10
from dpm_ppl.nn import ImageNet


PIXELS = 32 * 32


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.1))
    network = ImageNet(
        (3, 32, 32),
        num_steps,
        num_scales=3,
        conv_channels=100,
        conv_depth=6,
        dense_width=1000,
        dense_depth=6,
        dense_features=5,
        upper_width=100,
        upper_depth=4,
        key=key,
    )
    return dpm.GaussianDiffusion((3, 32, 32), schedule, network=network)


def experiment(data_path: str) -> Experiment:
    return Experiment(
        name="cifar10",
        data=Cifar10(data_path),
        model=model,
        num_steps=1000,
        train=TrainConfig(
            steps=200_000,
            batch_size=200,
            learning_rate=1e-3,
            steps_per_call=100,
            eval_every=20_000,
            checkpoint_every=10_000,
            eval_size=1_000,
        ),
        # Table 1 in bits per pixel (3 channels), times 1024 pixels: bits per image
        paper=PaperRow(K_bits=5.4 * PIXELS, K_minus_Lnull_bits=11.5 * PIXELS),
    )


if __name__ == "__main__":
    import sys

    from dpm_ppl.cli import main

    sys.exit(main(["fit", __file__, *sys.argv[1:]]))
