"""Your own real-valued data: Gaussian diffusion on the rows of a file.

    dpm fit models/tabular.py --data mydata.csv                   # or .npy / .npz; one example per row
    dpm fit models/tabular.py --data mydata.csv --columns 2,3,-1  # some columns (names or indices)

The file is read by `dpm_ppl.datasets.FileData` (a numeric CSV, header auto-detected, or a NumPy
array of shape (num_examples, d)), shuffled with the run's seed and split three ways: 10% held out
for the reported numbers, 10% of the rest for validation, the rest for training. Each column is
scaled to zero mean and unit variance on the training rows (the paper's scripts use one global
scale instead; bits in data units count the scaling's log-Jacobian). Constant columns and tiny
files are warned about. The defaults scale with the number of columns d and of training rows n:

- T = 40 diffusion steps, β learned from a log-spaced start 10⁻⁵…0.5 (β₁ stays fixed);
- an MLP with 3 hidden layers of min(1024, max(128, 16·d), max(64, n/4)) units and a readout per step;
- up to min(200,000, max(20,000 + 2,000·d, 4·n)) training steps of batch min(256, n), Adam 2·10⁻³
  with cosine decay; the validation bound is evaluated every 250 steps, training stops after 20
  evaluations without a better one, and the parameters of the best validation bound are kept.

`dpm sample RUN` and `dpm evaluate RUN` need nothing but the run folder (it keeps a copy of the file).
Copy this script to change any default.
"""

import jax

import dpm_ppl as dpm
from dpm_ppl import Experiment, TrainConfig
from dpm_ppl.datasets import FileData
from dpm_ppl.nn import MLPNet


def sizes(num_train: int, dim: int) -> dict:
    """The defaults for n training rows of d columns (see the module docstring)."""
    width = min(1024, max(128, 16 * dim), max(64, num_train // 4))
    steps = min(200_000, max(20_000 + 2_000 * dim, 4 * num_train))
    return {"width": width, "steps": steps, "eval_every": 250, "patience": 20}


def experiment(data_path: str, columns: str | None = None) -> Experiment:
    data = FileData(data_path, heldout_fraction=0.1, validation_fraction=0.1, per_column=True, columns=columns)
    if len(data.event_shape) != 1:
        raise ValueError(
            f"models/tabular.py models rows of numbers, but the examples in {data_path!r} have shape "
            f"{data.event_shape}. Flatten them first: np.save(path, x.reshape(len(x), -1))."
        )
    (dim,) = data.event_shape
    s = sizes(len(data.raw_split(seed=0)[0]), dim)  # the split's sizes do not depend on the seed

    def model(key: jax.Array, num_steps: int) -> dpm.GaussianDiffusion:
        schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(num_steps, beta_min=1e-5, beta_max=0.5))
        network = MLPNet(dim, num_steps, width=s["width"], depth=3, key=key)
        return dpm.GaussianDiffusion((dim,), schedule, network=network)

    return Experiment(
        name=f"tabular_{data.name}",
        data=data,
        model=model,
        num_steps=40,
        train=TrainConfig(
            steps=s["steps"],
            batch_size=256,
            learning_rate=2e-3,
            steps_per_call=250,
            eval_every=s["eval_every"],
            checkpoint_every=s["steps"] // 4,
            patience=s["patience"],
        ),
    )


if __name__ == "__main__":
    import sys

    from dpm_ppl.cli import main

    sys.exit(main(["fit", __file__, *sys.argv[1:]]))
