"""8×8 handwritten digits (scikit-learn's ``load_digits``): the image pipeline end to end on a CPU in minutes.

Not an experiment of the paper (its image experiments are MNIST, CIFAR-10, dead leaves and bark: see
models/mnist.py, models/cifar10.py, models/dead_leaves.py, models/textures.py); the same architecture
(App. D.2.1, `dpm_ppl.nn.ImageNet`) at a size a 2-core CPU trains in about a quarter of an hour.

Data: 1797 images of 17 grey levels; 297 held out. Each grey level v is dequantised to (v + u)/17, u ~ U(0, 1)
(8 independent copies of every training image), then scaled to unit variance with one global scale
(`dpm_ppl.datasets.Digits`). Event shape (8, 8); d = 64, so bits/pixel = K/64.

Model: Gaussian diffusion, T = 100 (the paper's image runs use T = 1000: `--T 1000` works, it only makes
held-out evaluation and sampling 10× slower), β learned from a log-spaced start 10⁻⁴…0.3; the network has
one multi-scale convolution at 3 scales (8×8, 4×4, 2×2; 16 filters) beside a dense pathway (2 × 256 tanh
units), two 1×1 layers of 32 units and a readout on 16 temporal bumps. Training: 10,000 steps of batch 128,
Adam 2·10⁻³ with cosine decay.

    dpm fit models/digits.py
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import Digits
from dpm_ppl.nn import ImageNet


def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-4, beta_max=0.3))
    network = ImageNet(
        (8, 8),
        num_steps,
        num_scales=3,
        conv_channels=16,
        conv_depth=1,
        dense_width=256,
        dense_depth=2,
        dense_features=4,
        upper_width=32,
        upper_depth=2,
        num_basis=16,
        key=key,
    )
    return dpm.GaussianDiffusion((8, 8), schedule, network=network)


experiment = Experiment(
    name="digits",
    data=Digits(),
    model=model,
    num_steps=100,
    train=TrainConfig(
        steps=10_000,
        batch_size=128,
        learning_rate=2e-3,
        steps_per_call=250,
        eval_every=2_500,
        checkpoint_every=2_500,
        eval_size=297,
    ),
)


if __name__ == "__main__":
    from dpm_ppl.cli import main

    main(["fit", __file__])
