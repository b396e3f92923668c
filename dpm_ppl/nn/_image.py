"""The paper's image network (App. D.2.1, Fig. D.1): multi-scale convolutions beside a dense pathway, 1×1
convolutions, and a temporal bump-basis readout giving ``(z_mu, z_sigma)`` for every pixel.

Images have event shape ``(H, W)`` (one channel) or ``(C, H, W)`` (channels first, e.g. ``(3, 32, 32)`` for
CIFAR-10); the network returns arrays of the same shape, so it plugs into
``GaussianDiffusion(event_shape, schedule, network=ImageNet(event_shape, T, key=key))``.

Layers, bottom to top (§7 "Network"):

1. **Multi-scale convolution** (`MultiScaleConv`), ``conv_depth`` layers: mean-pool the input to scales 1, 2,
   4, … (``num_scales`` of them), convolve at each scale with its own 3×3 filters, upsample every scale back
   by repetition, sum, and apply a pointwise softplus (the paper's four steps; the reference code instead
   puts a leaky ReLU inside each scale and averages — we follow the paper).
2. **Dense pathway**, in parallel: the flattened image through ``dense_depth`` tanh layers of ``dense_width``
   units, read out as ``dense_features`` features per pixel. The reference code's depth of this pathway
   silently uses the *convolutional* depth (its ``n_layers_dense_lower`` is unused);
   here ``dense_depth`` is its own argument and is honoured. ``dense_depth=0`` removes the pathway
   (the paper's dead-leaves and bark networks); ``conv_depth=0`` leaves the dense pathway only (the
   paper's MNIST network).
3. The two pathways' features are concatenated per pixel, each divided by √(its feature count) (reference
   code), then ``upper_depth`` **1×1 convolutions** (a per-pixel MLP, shared across pixels) with tanh.
4. **Temporal readout** (Eqs 62–63): per pixel and channel, z = Σ_j g_j(t)·(W_j h + b_j) on the bump
   basis (`dpm_ppl.nn.TemporalBasis`, J = ``num_basis`` = 10 as in the reference code). It is a
   `dpm_ppl.nn.TemporalReadout` shared across pixels and **initialised at zero**, so an untrained model's
   reverse kernel is the forward kernel's time reversal and K starts at L_null.

One departure, on by default: ``time_features=True`` also feeds the bump features g(t) to the dense
pathway's input and to the 1×1 layers, so the shared layers can specialise by noise level (as
`dpm_ppl.nn.MLPNet` does). The paper's network never sees t; ``time_features=False`` restores it.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._mlp import TemporalBasis, TemporalReadout


__all__ = ["ImageNet", "MultiScaleConv"]


def _mean_pool(h: Float[Array, "c h w"], f: int) -> Float[Array, "c h/f w/f"]:
    c, height, width = h.shape
    return h.reshape(c, height // f, f, width // f, f).mean(axis=(2, 4))


def _upsample(h: Float[Array, "c h w"], f: int) -> Float[Array, "c h*f w*f"]:
    return jnp.repeat(jnp.repeat(h, f, axis=1), f, axis=2)


class MultiScaleConv(eqx.Module):
    """One multi-scale convolution layer (paper App. D.2.1): pool to scales 2⁰…2^(S−1), convolve at each,
    upsample by repetition, sum, softplus. Input and output ``(channels, H, W)``; H and W must be
    divisible by 2^(S−1)."""

    convs: tuple[eqx.nn.Conv2d, ...]

    def __init__(self, in_channels: int, out_channels: int, num_scales: int, *, kernel_size: int = 3, key):
        keys = jax.random.split(key, num_scales)
        self.convs = tuple(eqx.nn.Conv2d(in_channels, out_channels, kernel_size, padding="SAME", key=k) for k in keys)

    def __call__(self, h: Float[Array, "c h w"]) -> Float[Array, "o h w"]:
        out = 0.0
        for s, conv in enumerate(self.convs):
            f = 2**s
            out = out + (_upsample(conv(_mean_pool(h, f)), f) if f > 1 else conv(h))
        return jax.nn.softplus(out)


class ImageNet(eqx.Module):
    """The paper's image network ``(x_t, t) -> (z_mu, z_sigma)`` on one image (App. D.2.1, Fig. D.1).

    **Arguments:**

    - `event_shape`: ``(H, W)`` or ``(C, H, W)``.
    - `num_steps`: T.
    - `num_scales`: scales of each multi-scale convolution (1 = plain 3×3 convolutions; the reference
      code's default); H and W must be divisible by 2^(num_scales − 1).
    - `conv_channels`, `conv_depth`: filters per multi-scale layer and number of layers (0: no conv pathway).
    - `dense_width`, `dense_depth`, `dense_features`: the dense pathway (``dense_depth=0``: none).
    - `upper_width`, `upper_depth`: the 1×1 convolution layers.
    - `num_basis`: J, the temporal bumps of the readout (``per_step=True``: one readout per step).
    - `time_features`: feed g(t) to the dense pathway and the 1×1 layers (a departure; see the module doc).
    - `activation`: the dense and 1×1 nonlinearity (paper: tanh).
    - `key`: a `jax.random` key for initialisation.
    """

    dense: tuple[eqx.nn.Linear, ...]
    convs: tuple[MultiScaleConv, ...]
    upper: tuple[eqx.nn.Linear, ...]
    readout: TemporalReadout
    time_basis: TemporalBasis | None
    event_shape: tuple[int, ...] = eqx.field(static=True)
    dense_features: int = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        num_steps: int,
        *,
        num_scales: int = 1,
        conv_channels: int = 20,
        conv_depth: int = 4,
        dense_width: int = 500,
        dense_depth: int = 4,
        dense_features: int = 2,
        upper_width: int = 20,
        upper_depth: int = 2,
        num_basis: int = 10,
        per_step: bool = False,
        time_features: bool = True,
        activation: Callable[[Array], Array] = jnp.tanh,
        key: PRNGKeyArray,
    ):
        event_shape = tuple(int(n) for n in event_shape)
        if len(event_shape) not in (2, 3) or any(n < 1 for n in event_shape):
            raise ValueError(f"`event_shape` must be (H, W) or (C, H, W) of positive sizes, got {event_shape!r}.")
        channels, height, width = (1, *event_shape) if len(event_shape) == 2 else event_shape
        if num_scales < 1:
            raise ValueError(f"`num_scales` must be ≥ 1, got {num_scales!r}.")
        most = 1
        while height % 2**most == 0 and width % 2**most == 0:
            most += 1
        if conv_depth and num_scales > most:
            raise ValueError(
                f"`num_scales={num_scales}` mean-pools by {2 ** (num_scales - 1)}, which must divide the image size "
                f"{height}×{width}; use num_scales ≤ {most}."
            )
        if conv_depth == 0 and dense_depth == 0:
            raise ValueError("Give the network at least one pathway: `conv_depth` ≥ 1 or `dense_depth` ≥ 1.")
        self.event_shape = event_shape
        self.activation = activation
        self.time_basis = TemporalBasis(num_steps, num_basis=min(num_steps, 16)) if time_features else None
        nt = self.time_basis.num_basis if self.time_basis is not None else 0
        k_conv, k_dense, k_upper = jax.random.split(key, 3)
        pixels = height * width
        sizes = [channels * pixels + nt] + [dense_width] * dense_depth
        keys = jax.random.split(k_dense, dense_depth + 1)
        dense = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]
        if dense_depth:
            dense.append(eqx.nn.Linear(dense_width, dense_features * pixels, key=keys[-1]))
        self.dense = tuple(dense)
        self.dense_features = dense_features if dense_depth else 0
        keys = jax.random.split(k_conv, max(conv_depth, 1))
        chans = [channels] + [conv_channels] * conv_depth
        self.convs = tuple(MultiScaleConv(a, b, num_scales, key=k) for a, b, k in zip(chans[:-1], chans[1:], keys))
        sizes = [(conv_channels if conv_depth else 0) + self.dense_features + nt] + [upper_width] * upper_depth
        keys = jax.random.split(k_upper, max(upper_depth, 1))
        self.upper = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        basis = TemporalBasis(num_steps, num_basis=num_basis, per_step=per_step)
        self.readout = TemporalReadout(sizes[-1], 2 * channels, basis)

    def __call__(self, x: Float[Array, "..."], t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        h0 = x.reshape((-1,) + x.shape[-2:])  # (C, H, W)
        channels, height, width = h0.shape
        g = self.time_basis(t) if self.time_basis is not None else jnp.zeros((0,), x.dtype)
        feats = []
        if self.convs:
            h = h0
            for conv in self.convs:
                h = conv(h)
            feats.append(h / jnp.sqrt(h.shape[0]))
        if self.dense:
            h = jnp.concatenate([h0.reshape(-1), g])
            for layer in self.dense[:-1]:
                h = self.activation(layer(h))
            h = self.dense[-1](h).reshape(self.dense_features, height, width)
            feats.append(h / jnp.sqrt(self.dense_features))
        feats.append(jnp.broadcast_to(g[:, None, None], (g.shape[0], height, width)))
        h = jnp.concatenate(feats).reshape(-1, height * width)  # (features, pixels)
        for layer in self.upper:  # 1×1 convolutions: one Linear shared by every pixel
            assert layer.bias is not None  # built with eqx.nn.Linear's default use_bias=True
            h = self.activation(layer.weight @ h + layer.bias[:, None])
        weight, bias = self.readout.at(t)
        z = (weight @ h + bias[:, None]).reshape(2, channels, height, width)
        return z[0].reshape(x.shape), z[1].reshape(x.shape)
