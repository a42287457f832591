"""On-device preprocessing and augmentation as batched tensor ops.

Batches arrive from :mod:`.shards` as uint8 ``(B, 1, S, S)``; :class:`DevicePreprocess` moves them to
the device (non-blocking from pinned memory), converts to float in [0, 1], resizes to the model's input
size if the shards were prepared at another size, applies :class:`BatchAugment` (training only),
replicates the grey channel to ``in_chans`` and normalizes. Everything runs on whichever device the
batch is on -- on a GPU the data loader only moves bytes (as seed 000 did).

Augmentation (per sample, random): horizontal flip, small rotation, optional shear (off for the
three-class task: seed 004 found shear confuses fractured with beyond repair), scale jitter,
brightness/contrast, gamma and Gaussian noise. In training the random draws come from
:func:`augment_table` (seeded by run seed and epoch, indexed by dataset index), so the augmentation
does not depend on how the data is split over ranks; without a table they come from torch's RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability
    vflip: float = 0.0
    rotate_deg: float = 10.0  # uniform in [-r, r]
    shear_deg: float = 0.0  # uniform in [-s, s]; 0 = off
    scale: float = 0.1  # zoom in [1 - s, 1 + s]
    translate: float = 0.05  # fraction of the size
    brightness: float = 0.1  # additive, uniform in [-b, b]
    contrast: float = 0.15  # multiplicative around the image mean, [1 - c, 1 + c]
    gamma: float = 0.2  # log-uniform in [1/(1+g), 1+g]
    noise_std: float = 0.01  # Gaussian noise std (times a uniform [0, 1] factor)
    p_geometric: float = 0.9  # probability a sample gets the affine transform

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


N_PARAMS = 14  # uniform draws per sample (see BatchAugment.forward)
_NOISE_BANK = 16


def augment_table(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Per-sample augmentation draws for one epoch: ``(n, N_PARAMS)`` uniforms in [0, 1), CPU.

    Every rank builds the same table and a batch takes the rows of its dataset indices, so sample
    ``i`` gets the same augmentation in epoch ``e`` whatever the world size: a DDP run sees exactly
    the augmented images the serial run sees (only dropout and float summation order differ).
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1))
    return torch.rand(n, N_PARAMS, generator=g)


class BatchAugment(torch.nn.Module):
    """Random per-sample augmentation of a float batch ``(B, C, H, W)`` in [0, 1); returns [0, 1].

    ``params`` (``(B, N_PARAMS)`` uniforms, e.g. rows of :func:`augment_table`) makes the result a
    function of the sample; without it the draws come from torch's RNG on the batch's device.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        super().__init__()
        self.cfg = cfg or AugmentConfig()
        self._bank: torch.Tensor | None = None

    def _noise(self, shape: torch.Size, dev: torch.device, pick: torch.Tensor) -> torch.Tensor:
        """Gaussian noise fields from a fixed bank (seeded), one per sample chosen by ``pick`` in [0, 1)."""
        h, w = shape[-2:]
        if self._bank is None or self._bank.shape[-2:] != (h, w) or self._bank.device != dev:
            g = torch.Generator().manual_seed(12345)
            self._bank = torch.randn(_NOISE_BANK, 1, h, w, generator=g).to(dev)
        k = (pick * _NOISE_BANK).long().clamp_(0, _NOISE_BANK - 1)
        return self._bank[k]

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, params: torch.Tensor | None = None, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augmented batch; with ``masks`` (``(B, 1, H, W)`` lesion masks) also the masks moved by the same
        flips and affine warp (no photometric change), so box supervision follows the image."""
        c = self.cfg
        b, dev = x.shape[0], x.device
        u = (params.to(dev, torch.float32) if params is not None else torch.rand(b, N_PARAMS, device=dev)).T

        def span(i: int, low: float, high: float) -> torch.Tensor:
            return (u[i] * (high - low) + low)[:, None, None, None]

        x = self._geometric(x, u)
        if masks is not None:
            masks = self._geometric(masks.to(dev, torch.float32), u)
        if c.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * span(8, 1 - c.contrast, 1 + c.contrast) + mean
        if c.brightness > 0:
            x = x + span(9, -c.brightness, c.brightness)
        x = x.clamp(0, 1)
        if c.gamma > 0:
            lg = math.log1p(c.gamma)
            x = x.clamp_min(1e-6).pow(torch.exp(span(10, -lg, lg)))
        if c.noise_std > 0:
            noise = self._noise(x.shape, dev, u[12]) if params is not None else torch.randn_like(x)
            x = x + noise * (c.noise_std * u[11])[:, None, None, None]
        x = x.clamp(0, 1)
        return x if masks is None else (x, masks)

    def _geometric(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.hflip > 0:
            x = torch.where((u[0] < c.hflip)[:, None, None, None], x.flip(-1), x)
        if c.vflip > 0:
            x = torch.where((u[1] < c.vflip)[:, None, None, None], x.flip(-2), x)
        if c.p_geometric > 0 and (c.rotate_deg or c.shear_deg or c.scale or c.translate):
            x = self._affine(x, u)
        return x

    def _affine(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        b, dev, dt = x.shape[0], x.device, x.dtype

        def span(i: int, low: float, high: float) -> torch.Tensor:
            return u[i] * (high - low) + low

        apply = (u[2] < c.p_geometric).to(dt)
        ang = torch.deg2rad(span(3, -c.rotate_deg, c.rotate_deg)) * apply
        sh = torch.deg2rad(span(4, -c.shear_deg, c.shear_deg)) * apply
        sc = 1 + span(5, -c.scale, c.scale) * apply
        tx = span(6, -c.translate, c.translate) * 2 * apply
        ty = span(7, -c.translate, c.translate) * 2 * apply
        cos, sin, tan = torch.cos(ang), torch.sin(ang), torch.tan(sh)
        # output->input sampling grid: rotation @ shear (x direction), divided by the zoom
        theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
        theta[:, 0, 0] = cos / sc
        theta[:, 0, 1] = (cos * tan - sin) / sc
        theta[:, 1, 0] = sin / sc
        theta[:, 1, 1] = (sin * tan + cos) / sc
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class DevicePreprocess(torch.nn.Module):
    """uint8 ``(B, 1, S, S)`` (any device) -> normalized float ``(B, in_chans, size, size)`` on ``device``."""

    def __init__(
        self,
        device: torch.device | str,
        image_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentConfig | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.device = torch.device(device)
        self.image_size = image_size
        self.in_chans = in_chans
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} values; got {list(mean)} / {list(std)}.")
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(self.device)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(self.device)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        # (x - mean) / std as one multiply-add per output value: x * scale + shift. The /255 of uint8
        # input folds into the scale when nothing needs the [0, 1] range in between (no augmentation;
        # resizing is linear). bench/bench_input_pipeline.py: about 3x fewer passes over the batch.
        self.register_buffer("scale", 1.0 / std_t)
        self.register_buffer("scale_u8", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)
        # The same constants as Python floats, for the per-channel CPU path in _normalise.
        self._scale_f = [1.0 / float(s) for s in std]
        self._scale_u8_f = [1.0 / (255.0 * float(s)) for s in std]
        self._shift_f = [-float(m) / float(s) for m, s in zip(mean, std, strict=True)]
        self.augment = BatchAugment(augment) if augment is not None else None
        self.channels_last = channels_last

    @torch.no_grad()
    def forward(
        self,
        batch: torch.Tensor,
        train: bool = False,
        params: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The model's input; with ``masks`` (lesion masks at the batch's size) also the masks resized and
        augmented like the images, ``(B, 1, image_size, image_size)``."""
        if masks is not None:
            masks = masks.to(self.device, torch.float32)
            if masks.shape[-2:] != (self.image_size, self.image_size):
                masks = F.interpolate(masks, size=(self.image_size, self.image_size), mode="nearest")
        x = batch.to(self.device, non_blocking=True)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        augmenting = train and self.augment is not None
        resizing = x.shape[-1] != self.image_size or x.shape[-2] != self.image_size
        u8 = x.dtype == torch.uint8
        if u8 and augmenting:  # the augmentations work on [0, 1]
            x = x.float().div_(255.0)
        elif not u8 or resizing or x.shape[1] != 1:
            x = x.float()
        # else: uint8 stays uint8 until _normalise converts it while writing the output
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        if resizing:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        if augmenting:
            if masks is not None:
                x, masks = self.augment(x, params, masks)
            else:
                x = self.augment(x, params)
        x = self._normalise(x, u8 and not augmenting)
        return x if masks is None else (x, masks)

    def _normalise(self, x: torch.Tensor, from_u8: bool) -> torch.Tensor:
        """``(x - mean) / std`` replicated to ``in_chans``, as one multiply-add per output value
        (``from_u8``: x holds 0..255 values and the /255 is folded into the scale).

        On the CPU each output channel is written as a copy (converting uint8 on the fly), then an
        in-place multiply and add over contiguous memory: model-ready 224-px batches from 256-px
        shards went from 4312 to 6742 img/s on one thread against one broadcasting ``addcmul``
        over the expanded grey channel (bench/bench_input_pipeline.py, BENCHMARKS.md section 7).
        On a GPU one ``addcmul`` kernel is the cheaper form."""
        if self.device.type != "cpu" or self.channels_last:
            scale = self.scale_u8 if from_u8 else self.scale
            x = torch.addcmul(self.shift, x.expand(-1, self.in_chans, -1, -1).float(), scale)
            if self.channels_last:
                return x.contiguous(memory_format=torch.channels_last)
            return x.contiguous()
        scales = self._scale_u8_f if from_u8 else self._scale_f
        out = torch.empty((x.shape[0], self.in_chans, *x.shape[-2:]), dtype=torch.float32)
        grey = x[:, 0]
        for c in range(self.in_chans):
            channel = out[:, c]
            channel.copy_(grey)
            channel.mul_(scales[c]).add_(self._shift_f[c])
        return out
