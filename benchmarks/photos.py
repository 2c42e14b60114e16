"""Real photos for calibration and evaluation: crops of the photos scikit-image ships
(`skimage.data`, no download), at several scales and positions, resized to the model's input.
Calibration and evaluation crops come from different random draws (different seeds)."""

from __future__ import annotations

import numpy as np

COLOUR = (
    "astronaut",
    "cat",
    "chelsea",
    "coffee",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
GREY = ("camera", "coins", "moon")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _photos() -> list[np.ndarray]:
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in COLOUR]
    photos += [np.repeat(getattr(skimage.data, name)()[..., None], 3, axis=2) for name in GREY]
    return [p[..., :3].astype(np.uint8) for p in photos]


def crops(count: int, *, size: int = 224, seed: int = 0) -> np.ndarray:
    """`count` uint8 RGB crops (N, size, size, 3): a random photo, a random square of 30-100% of its
    shorter side at a random position, resized bilinearly, flipped half of the time."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = _photos()
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
        array = np.asarray(crop)
        out[i] = array[:, ::-1] if rng.random() < 0.5 else array
    return out


def imagenet_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW normalised with the ImageNet mean and std."""
    x = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
