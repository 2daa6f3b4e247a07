"""PSNR and SSIM as computed by the SR/restoration papers' MATLAB code.

- ``psnr``: ``compute_psnr.m`` of VDSR/DRRN/MemNet: ``20 log10(255 / rmse)`` over all pixels of
  the two (already cropped, single-channel) images taken as double.
- ``ssim``: Z. Wang's original ``ssim_index.m`` (2003): 11x11 Gaussian window with sigma 1.5
  (``fspecial``, normalised), K = [0.01, 0.03], L = 255, statistics by ``filter2(..., 'valid')``,
  mean of the SSIM map. Unlike the later ``ssim.m`` there is no automatic downsampling; this is
  the function the MemNet/DRRN test scripts call for their tables.
"""
from __future__ import annotations

import math

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
PEAK = 255.0


def _pair(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"{name}: expected two 2-D images of the same shape, got {a.shape} and {b.shape}")
    return a, b


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = PEAK) -> float:
    """PSNR in dB of two single-channel images on the 0..peak scale (inf when identical)."""
    a, b = _pair(reference, test, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 20 * math.log10(peak / math.sqrt(mse))


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D factor of ``fspecial('gaussian', size, sigma)`` (whose 2-D window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def filter2_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``filter2(g' * g, image, 'valid')`` for a symmetric separable window, done as two 1-D passes."""
    n = g.size
    rows = sum(g[k] * image[k:image.shape[0] - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k:rows.shape[1] - n + 1 + k] for k in range(n))


def ssim(reference: np.ndarray, test: np.ndarray, peak: float = PEAK) -> float:
    """Mean SSIM of two single-channel images, exactly as Wang's ``ssim_index.m`` with its defaults."""
    a, b = _pair(reference, test, "ssim")
    if min(a.shape) < SSIM_WINDOW:
        return -math.inf  # what ssim_index returns for images smaller than the window
    c1, c2 = (SSIM_K[0] * peak) ** 2, (SSIM_K[1] * peak) ** 2
    g = gaussian_window_1d()
    mu1, mu2 = filter2_valid(a, g), filter2_valid(b, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filter2_valid(a * a, g) - mu1_sq
    sigma2_sq = filter2_valid(b * b, g) - mu2_sq
    sigma12 = filter2_valid(a * b, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())
