"""Equinox networks for the reverse kernels: the MLP with the paper's temporal bump readout, and the paper's
multi-scale convolutional network for images (App. D)."""

from ._image import ImageNet as ImageNet
from ._image import MultiScaleConv as MultiScaleConv
from ._mlp import MLPNet as MLPNet
from ._mlp import TemporalBasis as TemporalBasis
from ._mlp import TemporalReadout as TemporalReadout
