"""Preprocessing shared by all sources: resizing, greyscale conversion, normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float_images(images: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """uint8-like (N, C, H, W) images to float32 in [0, 1]."""
    return images.float() / scale


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) images to size x size (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def to_greyscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, the same weights as PIL's ``convert("L")``."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def normalize(
    train: torch.Tensor, test: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with fixed statistics (the original zoos' constants)."""
    m = torch.tensor(mean, dtype=train.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=train.dtype).view(1, -1, 1, 1)
    return (train - m) / s, (test - m) / s


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window, offset rounded as torchvision's ``CenterCrop`` does."""
    height, width = images.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"cannot center-crop {height}x{width} images to {size}x{size}")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]
