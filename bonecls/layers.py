"""Parameter-free layers of bonecls' own networks: pooling and input standardisation.

They hold no weights (:class:`LocalStandardize` keeps its Gaussian as a plain array),
so architectures that differ only in these layers load each other's state dicts unchanged
(``bonecls.models.WEIGHT_FAMILIES``), and they export to ONNX as ordinary operators.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["ImageStandardize", "LocalStandardize", "LogSumExpPool2d"]


class LogSumExpPool2d(nn.Module):
    """Global log-sum-exp pooling, ``(1/r) log mean exp(r x)`` over the cells of each feature map.

    Between the mean (r -> 0) and the maximum (r -> inf): a lesion of a few cells still dominates, but
    one spurious cell cannot decide the image alone the way it does under a global maximum, and every
    cell gets a share of the gradient (Pinheiro and Collobert, CVPR 2015; Wang et al., ChestX-ray8).
    """

    def __init__(self, r: float = 5.0):
        super().__init__()
        self.r = float(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2) * self.r
        lse = torch.logsumexp(flat, dim=2) - math.log(flat.shape[2])
        return (lse / self.r)[:, :, None, None]


class ImageStandardize(nn.Module):
    """Each image to zero mean and unit variance (over its pixels and channels) before the network.

    Part of the model, not of the preprocessing, so the app, ONNX and every trainer apply it alike: a
    radiograph's overall brightness and contrast (processing curves, exposure, equalisation) then tell
    the network nothing, which leaves the lesion as the thing to learn.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-5)


class LocalStandardize(nn.Module):
    """Local contrast normalisation: each pixel minus a Gaussian-weighted local mean, over the local std.

    Why: on the held-out rendering variants the fracture models fail most on the other CT, whose
    anatomy and density differ from the training CT's, and on other processing chains. What separates
    those from the training renders is mostly slow: body thickness, lung and soft-tissue density, the
    processing curve. A fracture is fast: a gap, a step or a dense band a few pixels wide. Subtracting the
    local mean (a Gaussian of ``sigma`` pixels) removes the slow part; dividing by the larger of the
    local std and its image-wide mean (Jarrett et al., ICCV 2009) evens out contrast without blowing up
    flat regions such as collimated borders. Per channel; replicate padding, so any input of at least
    one pixel works.
    """

    def __init__(self, sigma: float = 8.0):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}.")
        self.sigma = float(sigma)
        radius = max(1, math.ceil(3 * self.sigma))
        taps = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (taps / self.sigma) ** 2)
        self.kernel = kernel / kernel.sum()
        self._bands: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def band(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(n, n)`` matrix ``B`` with ``B @ v`` the Gaussian blur of a length-``n`` vector ``v`` under
        replicate padding (the padded taps folded onto the edge rows).

        Why a matrix and not a convolution: a one-channel 49-tap convolution is the slowest kind oneDNN
        runs (about 7 ms per 256-px image at batch 32, one thread), while the same blur as two small
        matrix products takes about 0.45 ms, with the same sums in another order (max difference 5e-7).
        Built with NumPy from the image size, so the ONNX tracer records a constant, not how it was made.
        The products cost ``2 n`` multiply-adds per pixel against the convolution's 98, yet they stayed
        the faster up to 2048 px a side (191 against 370 ms, one image, one thread); every bonecls
        network reads 256 px or less.
        """
        size = int(n)
        key = (size, device, dtype)
        if key not in self._bands:
            radius = len(self.kernel) // 2
            rows = np.repeat(np.arange(size), len(self.kernel))
            cols = np.clip(np.arange(size)[:, None] + np.arange(-radius, radius + 1), 0, size - 1).ravel()
            matrix = np.zeros((size, size))
            np.add.at(matrix, (rows, cols), np.tile(self.kernel, size))
            self._bands[key] = torch.from_numpy(matrix).to(device=device, dtype=dtype)
        return self._bands[key]

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.band(x.shape[-2], x.device, x.dtype)
        columns = self.band(x.shape[-1], x.device, x.dtype)
        return torch.matmul(torch.matmul(rows, x), columns.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._blur(x)
        local_std = torch.sqrt(self._blur(centred * centred) + 1e-8)
        floor = local_std.mean(dim=(2, 3), keepdim=True)
        return centred / (torch.maximum(local_std, floor) + 1e-5)
