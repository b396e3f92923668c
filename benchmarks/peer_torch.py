"""The PyTorch peer: the Swiss-roll model, its loss and its sampler written in PyTorch, step for step.

The same network as `dpm_ppl.nn.MLPNet` (2 + 16 bump features → 3 × 128 SiLU → a readout per step),
the same learned schedule (β₁ fixed, logits for β₂…β_T), the same stratified one-t-per-example KL
bound (paper Eq 14) and the same optimiser (global-norm clipping, Adam, warm-up then cosine decay),
in eager PyTorch on CPU. Weights, data and the random draws of the numerical check come from a
``.npz`` written by the JAX side (`benchmarks.peer`), so the losses can be compared number for number.

Runs in its own Python 3.11 venv with only ``torch`` and ``numpy`` (no dpm_ppl, no JAX):

    python benchmarks/peer_torch.py --npz setup.npz --train-steps 100 --sample 256 --repeats 5
    python benchmarks/peer_torch.py --serve      # JSON commands on stdin, one JSON answer per line

Every answer is JSON; times are measured here, so the pipe is not part of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch


LOG_2PI = math.log(2.0 * math.pi)


class Peer(torch.nn.Module):
    """Network and schedule of the Swiss-roll model (weights loaded from the JAX side)."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        t = lambda a: torch.nn.Parameter(torch.as_tensor(np.asarray(a, np.float32)))
        self.layers = torch.nn.ModuleList()
        i = 0
        while f"layer{i}_weight" in w:
            lin = torch.nn.Linear(*w[f"layer{i}_weight"].shape[::-1])
            lin.weight, lin.bias = t(w[f"layer{i}_weight"]), t(w[f"layer{i}_bias"])
            self.layers.append(lin)
            i += 1
        self.readout_weight, self.readout_bias = t(w["readout_weight"]), t(w["readout_bias"])
        self.logits = t(w["logits"])
        self.beta1 = float(w["beta1"])
        self.T = self.logits.shape[0] + 1
        self.dim = self.readout_bias.shape[1] // 2
        J = int(w["num_time_features"])
        self.register_buffer("centres", torch.linspace(1.0, self.T, J))
        self.bump_width = float(self.centres[1] - self.centres[0]) if J > 1 else 1.0

    def schedule(self):
        betas = torch.cat([torch.full((1,), self.beta1), torch.sigmoid(self.logits)])
        log_abar = torch.cat([torch.zeros(1), torch.cumsum(torch.log1p(-betas), 0)])
        return betas, torch.exp(log_abar), -torch.expm1(log_abar)

    def network(self, x, t):
        """(z_mu, z_sigma) for a batch; ``t`` holds the steps 1…T (int64)."""
        if self.centres.shape[0] > 1:
            g = torch.softmax(-((t[:, None].float() - self.centres) ** 2) / (2.0 * self.bump_width**2), -1)
        else:
            g = torch.ones(x.shape[0], 1)
        h = torch.cat([x, g], -1)
        for layer in self.layers:
            h = torch.nn.functional.silu(layer(h))
        out = torch.bmm(self.readout_weight[t - 1], h[:, :, None])[:, :, 0] + self.readout_bias[t - 1]
        return out[:, : self.dim], out[:, self.dim :]

    def reverse(self, betas, oma, x, t):
        """Mean and variance of p(xᵗ⁻¹|xᵗ): √(1−β)x + √β z_mu, and β^v β̃^(1−v), v = σ(z_sigma)."""
        z_mu, z_sigma = self.network(x, t)
        beta_t = betas[t - 1][:, None]
        lower = (oma[t - 1] * betas[t - 1] / oma[t])[:, None]
        v = torch.sigmoid(z_sigma)
        var = torch.exp(v * torch.log(beta_t) + (1.0 - v) * torch.log(lower))
        return torch.sqrt(1.0 - beta_t) * x + torch.sqrt(beta_t) * z_mu, var

    def loss(self, x0, t, noise):
        """−Σ_batch K(x⁰), the KL at step t per example scaled by T − 1 (paper Eq 14)."""
        T, d = self.T, x0.shape[-1]
        betas, abar, oma = self.schedule()
        xt = torch.sqrt(abar[t])[:, None] * x0 + torch.sqrt(oma[t])[:, None] * noise
        mean_p, var_p = self.reverse(betas, oma, xt, t)
        beta_t = betas[t - 1][:, None]
        mean_q = (torch.sqrt(abar[t - 1]) * betas[t - 1] / oma[t])[:, None] * x0
        mean_q = mean_q + (torch.sqrt(1.0 - beta_t) * (oma[t - 1] / oma[t])[:, None]) * xt
        var_q = (oma[t - 1] * betas[t - 1] / oma[t])[:, None]
        kl = 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
        kl = (T - 1) * kl.sum(-1)
        entropy_T = 0.5 * d * (LOG_2PI + 1.0 + torch.log(oma[T]))
        entropy_1 = 0.5 * d * (LOG_2PI + 1.0 + torch.log(betas[0]))
        c = betas[0] + abar[T]
        prior = -0.5 * d * LOG_2PI - 0.5 * (c * (x0**2).sum(-1) + (1.0 - c) * d)
        return -(-kl + entropy_T - entropy_1 + prior).sum()

    def draws(self, batch: int):
        """Stratified t ∈ 2…T (one per example, spread evenly over the batch) and the noise of xᵗ."""
        u = (torch.randperm(batch) + torch.rand(())) / batch
        t = 2 + torch.clamp(torch.floor(u * (self.T - 1)).long(), max=self.T - 2)
        return t, torch.randn(batch, self.dim)

    @torch.inference_mode()
    def sample(self, n: int, noise=None):
        """Ancestral sampling x^T ~ N(0, I), t = T…2, then the fixed last step; ``noise`` = (x_T, steps, last)."""
        betas, _, oma = self.schedule()
        x_T, steps, last = noise if noise is not None else (torch.randn(n, self.dim), None, torch.randn(n, self.dim))
        x = x_T
        for i, t in enumerate(range(self.T, 1, -1)):
            mean, var = self.reverse(betas, oma, x, torch.full((n,), t, dtype=torch.long))
            e = steps[i] if steps is not None else torch.randn(n, self.dim)
            x = mean + torch.sqrt(var) * e
        return torch.sqrt(1.0 - betas[0]) * x + torch.sqrt(betas[0]) * last


def warmup_cosine(step: int, peak: float, final: float, warmup: int, total: int) -> float:
    """optax.warmup_cosine_decay_schedule(peak·10⁻², peak, warmup, total, final) at ``step``."""
    if warmup and step < warmup:
        return peak * 1e-2 + (peak - peak * 1e-2) * step / warmup
    frac = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * frac))


class Bench:
    """One benchmark setting: the model, a fixed batch, the optimiser and its step counter."""

    def __init__(self, npz: str):
        w = dict(np.load(npz))
        self.w = w
        self.model = Peer(w)
        self.x = torch.as_tensor(w["x"])
        cfg = json.loads(str(w["config"]))
        self.cfg = cfg
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg["learning_rate"])
        self.step = 0
        self.threads = torch.get_num_threads()

    def choose_threads(self, op: str, arg: int) -> int:
        """Use whichever of 1 thread and all cores runs ``op`` faster here (best of 2 calls each).

        On a loaded 2-core machine torch's OpenMP threads spin at barriers while the other core is
        taken, and two threads ran 8–30× slower than one; on an idle machine two may win.
        """
        best = {}
        for n in sorted({1, os.cpu_count() or 1}):
            self.threads = n
            best[n] = min(getattr(self, op)(arg) for _ in range(2))
        self.threads = min(best, key=best.get)
        return self.threads

    def train(self, steps: int) -> float:
        """Run ``steps`` updates on the fixed batch; returns the seconds they took."""
        cfg, model, opt = self.cfg, self.model, self.opt
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        for _ in range(steps):
            lr = warmup_cosine(self.step, cfg["learning_rate"], cfg["final_learning_rate"], cfg["warmup"], cfg["steps"])
            for group in opt.param_groups:
                group["lr"] = lr
            t, noise = model.draws(self.x.shape[0])
            loss = model.loss(self.x, t, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            self.step += 1
        return time.perf_counter() - start

    def sample(self, n: int) -> float:
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        self.model.sample(n)
        return time.perf_counter() - start

    def check(self) -> dict:
        """The loss and the samples from the JAX side's draws (``check_*`` arrays), as lists."""
        w = self.w
        out = {}
        if "check_t" in w:
            with torch.no_grad():
                loss = self.model.loss(self.x, torch.as_tensor(w["check_t"]).long(), torch.as_tensor(w["check_noise"]))
            out["loss"] = float(loss)
        if "check_x_T" in w:
            noise = tuple(torch.as_tensor(w[k]) for k in ("check_x_T", "check_steps", "check_last"))
            out["samples"] = self.model.sample(noise[0].shape[0], noise).numpy().tolist()
        return out


def info() -> dict:
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
    }


def serve() -> None:
    """Answer JSON commands from stdin: setup, train, sample, check, info, quit."""
    benches: dict[str, Bench] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "quit":
            break
        try:
            if op == "info":
                out = info()
            elif op == "setup":
                benches[cmd["name"]] = Bench(cmd["npz"])
                out = {"ok": True}
            elif op == "train":
                out = {"seconds": benches[cmd["name"]].train(cmd["steps"])}
            elif op == "sample":
                out = {"seconds": benches[cmd["name"]].sample(cmd["n"])}
            elif op == "threads":
                out = {"threads": benches[cmd["name"]].choose_threads(cmd["op"], cmd["arg"])}
            elif op == "check":
                out = benches[cmd["name"]].check()
            else:
                out = {"error": f"unknown command {op!r}"}
        except Exception as e:  # report to the JAX side rather than die mid-protocol
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help="answer JSON commands on stdin")
    p.add_argument("--npz", help="weights, data and settings written by the JAX side")
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--sample", type=int, default=0, help="samples per timed sampling call (0: no sampling)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.serve:
        serve()
        return
    if not args.npz:
        p.error("give --npz (or --serve)")
    bench = Bench(args.npz)
    out = {**info(), "check": bench.check(), "train_s_per_step": [], "sample_s": []}
    out["threads"] = bench.choose_threads("train", 5)
    for _ in range(args.repeats):
        out["train_s_per_step"].append(bench.train(args.train_steps) / args.train_steps)
        if args.sample:
            out["sample_s"].append(bench.sample(args.sample))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
