"""Text-line crops for a text-direction classifier: horizontal strips of the two photos of text that
scikit-image ships (`skimage.data.page()`, a printed page; `skimage.data.text()`, handwritten maths
on a slant), centred on the text lines a row-ink profile finds, each with its 180-degree rotation as
the other class. No download. Calibration and evaluation strips come from different seeds.

Preprocessing is PaddleOCR's cls: height 48, width 192 (strips are 4-10x as wide as high, so the
width is squeezed to 192 as PaddleOCR does for long lines), grey replicated to 3 channels,
x = (pixel / 255 - 0.5) / 0.5, NCHW.
"""

from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 48, 192
UPRIGHT, ROTATED = 0, 1  # PaddleOCR's cls label list is ['0', '180']
# Relative draw weights. text() is handwriting, far from the printed lines the classifier was
# trained on (the float model is near chance there), so it is a minority: it still exercises the
# low-margin inputs where quantization flips decisions without drowning the accuracy column.
SOURCES = {"page": 3, "text": 1}
INK_ROWS = 0.12  # a row is part of a text line when this share of its pixels is ink
MIN_LINE_ROWS = 6


def _line_bands(image: np.ndarray) -> list[tuple[int, int]]:
    """(top, bottom) row ranges where ink is dense: the text lines of a roughly level page."""
    from skimage.filters import threshold_local

    ink = image < threshold_local(image.astype(np.float64), 35, offset=10)
    dense = np.append(ink.mean(axis=1) >= INK_ROWS, False)
    bands, start = [], None
    for row, is_text in enumerate(dense):
        if is_text and start is None:
            start = row
        elif not is_text and start is not None:
            if row - start >= MIN_LINE_ROWS:
                bands.append((start, row))
            start = None
    return bands


def _strip(image: np.ndarray, band: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A strip around one text line: 1.3-2x the line's height, jittered vertically, 4-10x as wide."""
    from PIL import Image

    h_img, w_img = image.shape
    top, bottom = band
    height = min(h_img, int((bottom - top) * rng.uniform(1.3, 2.0)))
    centre = (top + bottom) / 2 + rng.uniform(-0.15, 0.15) * (bottom - top)
    row = int(np.clip(centre - height / 2, 0, h_img - height))
    width = min(w_img, int(height * rng.uniform(4.0, 10.0)))
    col = int(rng.integers(0, w_img - width + 1))
    crop = Image.fromarray(image[row : row + height, col : col + width])
    return np.asarray(crop.resize((WIDTH, HEIGHT), Image.BILINEAR))


def strips(count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` uint8 grey strips (N, 48, 192), their labels and the photo each came from: pairs of
    (upright, rotated 180), so any even-sized prefix or suffix is balanced."""
    import skimage.data

    rng = np.random.default_rng(seed)
    images = {name: getattr(skimage.data, name)() for name in SOURCES}
    bands = {name: _line_bands(image) for name, image in images.items()}
    names = list(SOURCES)
    weights = np.array([SOURCES[n] for n in names], np.float64)
    out = np.empty((count, HEIGHT, WIDTH), np.uint8)
    labels = np.empty(count, np.int64)
    sources = np.empty(count, f"U{max(map(len, names))}")
    for i in range(0, count, 2):
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        lines = bands[name]
        strip = _strip(images[name], lines[rng.integers(len(lines))], rng)
        out[i], labels[i] = strip, UPRIGHT
        if i + 1 < count:
            out[i + 1], labels[i + 1] = strip[::-1, ::-1], ROTATED
        sources[i : i + 2] = name
    return out, labels, sources


def paddle_cls_nchw(grey: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) grey -> float32 (N, 3, H, W), PaddleOCR cls normalisation."""
    x = (grey.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))
