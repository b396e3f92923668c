"""Your own binary data: binomial diffusion on the rows of a file of 0s and 1s.

    dpm fit models/binary.py --data mybits.npy       # or .npz / .csv; one example per row

The file is read by `dpm_ppl.datasets.FileData` (every entry must be 0 or 1: anything else is refused
with its row and column), shuffled with the run's seed and split 90/10 into training and held-out
rows; binary data are not rescaled, so results are in bits per example. The defaults follow the
binary-heartbeat recipe (paper §3.1.2) and scale with the dimension d:

- binomial diffusion toward B(p), p = the data's mean activity (add-one smoothed, so 0 < p < 1);
- T = 1000 steps of the fixed schedule β_t = 1/(T−t+1);
- an MLP (SiLU) with 3 hidden layers of max(64, 4·d) units (at most 1024) and a readout mixed over
  20 Gaussian bumps in t;
- 20,000 + 1,000·d training steps (at most 200,000) of batch 256, Adam 10⁻² with cosine decay.

p is estimated from the whole file (one number; the held-out rows barely move it). Copy this
script to change any default.
"""

import jax
import numpy as np

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import FileData, check_binary
from dpm_ppl.nn import MLPNet, TemporalBasis


def experiment(data_path: str) -> Experiment:
    data = FileData(data_path, heldout_fraction=0.1)
    if len(data.event_shape) != 1:
        raise ValueError(
            f"models/binary.py models rows of bits, but the examples in {data_path!r} have shape "
            f"{data.event_shape}. Flatten them first: np.save(path, x.reshape(len(x), -1))."
        )
    x = check_binary(data.array(), f"data file {data_path!r}")
    (dim,) = data.event_shape
    base_rate = (float(x.sum(dtype=np.float64)) + 1.0) / (x.size + 2.0)
    width = min(1024, max(64, 4 * dim))
    steps = min(200_000, 20_000 + 1_000 * dim)

    def model(key: jax.Array, num_steps: int) -> dpm.BinomialDiffusion:
        basis = TemporalBasis(num_steps, num_basis=min(num_steps, 20))
        network = MLPNet(dim, num_steps, width=width, depth=3, basis=basis, activation=jax.nn.silu, heads=1, key=key)
        return dpm.BinomialDiffusion((dim,), dpm.HarmonicSchedule(num_steps), network=network, base_rate=base_rate)

    return Experiment(
        name=f"binary_{data.name}",
        data=data,
        model=model,
        num_steps=1000,
        train=TrainConfig(
            steps=steps,
            batch_size=256,
            learning_rate=1e-2,
            steps_per_call=250,
            eval_every=steps // 4,
            checkpoint_every=steps // 4,
            eval_size=500,
        ),
    )


if __name__ == "__main__":
    import sys

    from dpm_ppl.cli import main

    sys.exit(main(["fit", __file__, *sys.argv[1:]]))
