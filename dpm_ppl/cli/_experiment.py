"""Model scripts: a file in ``models/`` declares ONE `Experiment` named ``experiment``.

A script is import-safe (no work at import time): it names the data, a factory for the model,
the training defaults and the paper's row to print beside the results. `load_script` imports it
from a path and checks it.

A script for the user's own data (``models/tabular.py``, ``models/binary.py``) declares instead a
function ``experiment(data_path) -> Experiment``: its defaults (network width, T, steps) can then
depend on the data it is given (``dpm fit SCRIPT --data FILE``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxtyping import PRNGKeyArray

from .._model import AbstractDiffusion
from ..datasets._base import Dataset
from ..infer._train import TrainConfig
from ._modules import import_script


__all__ = ["Experiment", "PaperRow", "load_script"]


@dataclasses.dataclass(frozen=True)
class PaperRow:
    """A row of the paper's Table 1: K and K − L_null in bits per example."""

    K_bits: float
    K_minus_Lnull_bits: float
    units: str = "bits"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What a model script declares.

    - `name`: a short name (used for default output folders).
    - `data`: the `Dataset`.
    - `model`: ``model(key, num_steps) -> GaussianDiffusion`` (or ``BinomialDiffusion``), building the
      network from ``key``.
    - `num_steps`: the default T (``dpm fit --T`` overrides it for quick runs).
    - `train`: the default `TrainConfig`.
    - `paper`: the paper's Table 1 row, if it has one.
    """

    name: str
    data: Dataset
    model: Callable[[PRNGKeyArray, int], AbstractDiffusion]
    num_steps: int
    train: TrainConfig
    paper: PaperRow | None = None

    def __post_init__(self):
        if not isinstance(self.data, Dataset):
            raise TypeError(f"`data` must be a dpm_ppl Dataset, got {type(self.data).__name__}.")
        if not callable(self.model):
            raise TypeError("`model` must be a callable (key, num_steps) -> a diffusion model.")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"`train` must be a TrainConfig, got {type(self.train).__name__}.")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"`num_steps` (T) must be an integer ≥ 1, got {self.num_steps!r}.")


def load_script(path: str | Path, data: str | Path | None = None, **options: Any) -> Experiment:
    """Import a model script from its path and return its ``experiment``.

    A script declaring ``experiment`` as a function of a data file is called with ``data``
    (required for it, refused for a script that brings its own data) and the keyword ``options``
    it declares (``columns`` for ``models/tabular.py``).
    """
    module = import_script(Path(path), "model", "models/ (e.g. models/swiss_roll.py)")
    experiment = getattr(module, "experiment", None)
    if isinstance(experiment, Experiment):
        if options:
            raise ValueError(
                f"{str(path)!r} brings its own data and takes no options, got {', '.join(f'--{k}' for k in options)}."
            )
        if data is not None:
            raise ValueError(
                f"{str(path)!r} brings its own data ({type(experiment.data).__name__}) and takes no `--data`, got "
                f"{str(data)!r}. To train on your file use models/tabular.py (real values) or models/binary.py (0/1)."
            )
        return experiment
    if not callable(experiment):
        raise ValueError(
            f"{str(path)!r} declares no `experiment = dpm_ppl.Experiment(...)` (or function of a data file "
            "returning one); a model script must define one (see models/swiss_roll.py, models/tabular.py)."
        )
    if data is None:
        raise ValueError(
            f"{str(path)!r} trains on your own data: give `--data FILE` (a .npy, .npz or .csv file, one example "
            f"per row), e.g. `dpm fit {str(path)} --data mydata.csv`."
        )
    accepted = inspect.signature(experiment).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(
            f"`experiment(data_path)` in {str(path)!r} takes no {', '.join(f'`{k}`' for k in unknown)} "
            f"(given as --{unknown[0]}); it accepts: {', '.join(list(accepted)[1:]) or 'nothing but the data file'}."
        )
    experiment = experiment(str(data), **options)
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"`experiment(data_path)` in {str(path)!r} must return a dpm_ppl Experiment, "
            f"got {type(experiment).__name__}."
        )
    return experiment
