"""Your own real-valued data: Gaussian diffusion on the rows of a file.

    dpm fit models/tabular.py --data mydata.csv      # or .npy / .npz; one example per row

The file is read by `dpm_ppl.data.FileData` (a numeric CSV, header auto-detected, or a NumPy
array of shape (num_examples, d)), shuffled with the run's seed, split 90/10 into training and
held-out rows, and scaled to unit variance with one shift and one global scale (paper Table 1
caption). The defaults scale with the dimension d (and follow the Swiss-roll recipe at d = 2):

- T = 40 diffusion steps, β learned from a log-spaced start 10⁻⁵…0.5 (β₁ stays fixed);
- an MLP with 3 hidden layers of max(128, 16·d) units (at most 1024) and a readout per step;
- 20,000 + 2,000·d training steps (at most 200,000) of batch 256, Adam 2·10⁻³ with cosine decay.

`dpm sample RUN` and `dpm evaluate RUN` reload the same file (its path and SHA-256 are in run.json).
Copy this script to change any default.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl.data import FileData
from dpm_ppl.experiment import Experiment
from dpm_ppl.nn import MLPNet
from dpm_ppl.train import TrainConfig


def experiment(data_path: str) -> Experiment:
    data = FileData(data_path, heldout_fraction=0.1)
    if len(data.event_shape) != 1:
        raise ValueError(
            f"models/tabular.py models rows of numbers, but the examples in {data_path!r} have shape "
            f"{data.event_shape}. Flatten them first: np.save(path, x.reshape(len(x), -1))."
        )
    (dim,) = data.event_shape
    width = min(1024, max(128, 16 * dim))
    steps = min(200_000, 20_000 + 2_000 * dim)

    def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
        schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.5))
        return dpm.GaussianDiffusion((dim,), schedule, network=MLPNet(dim, num_steps, width=width, depth=3, key=key))

    return Experiment(
        name=f"tabular_{data.name}",
        data=data,
        model=model,
        num_steps=40,
        train=TrainConfig(
            steps=steps,
            batch_size=256,
            learning_rate=2e-3,
            steps_per_call=250,
            eval_every=steps // 4,
            checkpoint_every=steps // 4,
        ),
    )


if __name__ == "__main__":
    import sys

    from dpm_ppl.cli import main

    sys.exit(main(["fit", __file__, *sys.argv[1:]]))
