"""Stimulus for the embedded spike data: drifting crops of real photographs, Gabor receptive fields.

The movie is made of scenes. Each scene shows one of the photographs that ship with
scikit-image (no download), converted to grayscale and rescaled so that its short side is a
few crop heights, and a `(height, width)` crop window drifts across it. The drift speed follows
the animal's running speed (as visual flow does in virtual-reality navigation), and the crop
reflects at the image borders. Neurons see the movie through random Gabor-like receptive fields.
"""

from __future__ import annotations

import numpy as np

from neurofound.errors import ConfigError

# Photographs bundled inside the scikit-image wheel (checked offline, see ../shared/specs/data.md).
DEFAULT_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "grass", "brick", "coins")


def load_images(names, short_side: int) -> list[np.ndarray]:
    """Grayscale float images in [0, 1], rescaled so that the short side is `short_side` pixels.

    Args:
        names: scikit-image `skimage.data` function names.
        short_side: target size in pixels of the shorter image side.

    Returns:
        list of `(h, w)` float32 arrays.
    """
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.transform import resize

    images = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ConfigError(f"skimage.data has no image {name!r}; try one of {DEFAULT_IMAGES}")
        img = np.asarray(loader())
        if img.ndim == 3 and img.shape[-1] == 4:
            img = rgba2rgb(img)
        if img.ndim == 3:
            img = rgb2gray(img)
        img = img.astype(np.float64)
        if img.max() > 1.0:
            img = img / 255.0
        scale = short_side / min(img.shape)
        shape = (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale)))
        images.append(np.clip(resize(img, shape, anti_aliasing=True), 0.0, 1.0).astype(np.float32))
    return images


def _reflect(x: np.ndarray, upper: float) -> np.ndarray:
    """Fold positions into [0, upper] by reflection at both ends (a bouncing crop window)."""
    if upper <= 0:
        return np.zeros_like(x)
    period = 2.0 * upper
    y = np.mod(x, period)
    return np.where(y > upper, period - y, y)


def drifting_crops(
    images: list[np.ndarray],
    n_frames: int,
    *,
    height: int,
    width: int,
    frame_rate: float,
    scene_duration: float,
    drift_px_per_s: float,
    speed_gain: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Movie `(n_frames, height, width)` float32 in [0, 1] of drifting crops.

    Args:
        images: grayscale images, each at least `(height, width)`.
        n_frames: number of frames.
        height, width: crop size in pixels.
        frame_rate: frames per second.
        scene_duration: seconds per scene (image + drift direction).
        drift_px_per_s: drift speed at unit running gain.
        speed_gain: (n_frames,) non-negative multiplier of the drift speed (running speed).
        rng: numpy generator (scene order, start positions, directions).
    """
    frames = np.empty((n_frames, height, width), dtype=np.float32)
    per_scene = max(1, int(round(scene_duration * frame_rate)))
    order = rng.permutation(len(images))
    for scene, start in enumerate(range(0, n_frames, per_scene)):
        stop = min(start + per_scene, n_frames)
        img = images[order[scene % len(images)]]
        max_y, max_x = img.shape[0] - height, img.shape[1] - width
        if max_y < 0 or max_x < 0:
            raise ConfigError(f"image of shape {img.shape} is smaller than the crop {height}x{width}")
        angle = rng.uniform(0.0, 2.0 * np.pi)
        step = drift_px_per_s / frame_rate * speed_gain[start:stop]
        travelled = np.concatenate([[0.0], np.cumsum(step)[:-1]])
        ys = _reflect(rng.uniform(0, max_y) + np.sin(angle) * travelled, max_y)
        xs = _reflect(rng.uniform(0, max_x) + np.cos(angle) * travelled, max_x)
        for k, (y, x) in enumerate(zip(np.rint(ys).astype(int), np.rint(xs).astype(int))):
            frames[start + k] = img[y : y + height, x : x + width]
    return frames


def gabor_receptive_fields(
    n: int,
    height: int,
    width: int,
    *,
    rng: np.random.Generator,
    sigma_px: tuple[float, float] = (3.0, 6.0),
    wavelength_px: tuple[float, float] = (8.0, 16.0),
) -> np.ndarray:
    """Random Gabor receptive fields `(n, height, width)`, zero-mean and unit L2 norm.

    Centre uniform over the frame, orientation and phase uniform, envelope width and
    wavelength uniform in the given pixel ranges (V1-like: about one cycle per envelope).
    Zero mean makes a neuron respond to contrast, not to overall luminance.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rfs = np.empty((n, height, width), dtype=np.float64)
    for i in range(n):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        sigma, lam = rng.uniform(*sigma_px), rng.uniform(*wavelength_px)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        g = np.exp(-r2 / (2 * sigma**2)) * np.cos(2 * np.pi * u / lam + phase)
        g -= g.mean()
        rfs[i] = g / (np.linalg.norm(g) + 1e-12)
    return rfs.astype(np.float32)


def ou_process(
    n: int, dt: float, *, tau: float, rng: np.random.Generator, x0: float | None = None
) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck samples (n,) at step `dt`, exact discretisation."""
    a = np.exp(-dt / tau)
    noise = rng.standard_normal(n) * np.sqrt(1.0 - a * a)
    x = np.empty(n)
    x[0] = rng.standard_normal() if x0 is None else x0
    for k in range(1, n):
        x[k] = a * x[k - 1] + noise[k]
    return x


def running_speed(n: int, rate: float, *, tau: float, scale: float, rng: np.random.Generator):
    """Smooth non-negative running speed (n,) at `rate` Hz: `scale * softplus(OU)` (cm/s)."""
    x = ou_process(n, 1.0 / rate, tau=tau, rng=rng)
    return scale * np.logaddexp(0.0, x)
