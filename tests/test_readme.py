"""The README's Python example runs as written, with smaller T and steps (the only substitutions)."""

import re
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"
# what the test shrinks; each must appear in the example exactly once, so a changed README fails here
SMALLER = {
    "T = 40": "T = 5",
    "steps=20_000": "steps=60",
    "eval_every=1_000": "eval_every=20",
    "1_000).x0": "100).x0",
    "num_trajectories=200": "num_trajectories=30",
    "num_particles=500": "num_particles=64",
}


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Python: train, sample, evaluate, query") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(capsys):
    code = _example()
    for old, new in SMALLER.items():
        assert code.count(old) == 1, f"the README example no longer holds {old!r}: update tests/test_readme.py"
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "IS log-likelihood:" in out and "log Z:" in out
    post, fitted = namespace["post"], namespace["fitted"]
    assert post.log_Z.shape == (4,) and all(abs(z) < 50 for z in post.log_Z.tolist())
    assert 0 < fitted.best_step <= 60
