"""Images with numpy alone: PNG (inflated with zlib), binary PGM/PPM and .npy; other formats through
Pillow when it happens to be installed. Plus the resizing the classifier needs.

Every reader returns uint8 pixels shaped (height, width, channels) with 1 (gray) or 3 (RGB) channels:
alpha is dropped (as Pillow's convert("RGB") does) and 16-bit samples keep their high byte.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
# PNG spec 11.2.2: colour type -> (samples per pixel, allowed bit depths)
PNG_COLOUR_TYPES = {
    0: (1, (1, 2, 4, 8, 16)),  # gray
    2: (3, (8, 16)),  # RGB
    3: (1, (1, 2, 4, 8)),  # palette index
    4: (2, (8, 16)),  # gray + alpha
    6: (4, (8, 16)),  # RGBA
}
PILLOW_SUFFIXES = (".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LUMA_601 = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, what Pillow's convert("L") uses
_PNM_NUMBER = re.compile(rb"(?:\s|#[^\r\n]*)*(\d+)")  # whitespace and '#' comments, then a decimal field


class ImageError(Exception):
    """An image that cannot be read; the message says why and what to do instead."""


def read_image(path: Path) -> np.ndarray:
    """Pixels of the image at `path` as uint8 (height, width, 1 or 3)."""
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        if data.startswith(PNG_SIGNATURE):
            return decode_png(data)
        if path.suffix.lower() == ".png":
            raise ImageError("not a PNG file (bad signature)")
        if data[:2] in (b"P5", b"P6"):
            return decode_pnm(data)
        if data[:2] in (b"P1", b"P2", b"P3", b"P4"):
            raise ImageError("only binary PGM/PPM (P5/P6) is supported; convert it to P5/P6 or PNG")
        if data.startswith(NPY_MAGIC):
            return read_npy(path)
        return read_with_pillow(path)
    except ImageError as error:
        raise ImageError(f"{path}: {error}") from None


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int

    @property
    def channels(self) -> int:
        return PNG_COLOUR_TYPES[self.colour_type][0]

    @property
    def row_bytes(self) -> int:
        return (self.width * self.channels * self.bit_depth + 7) // 8

    @property
    def filter_bytes(self) -> int:
        """The distance filters look back: one whole pixel, at least one byte (PNG spec 9.2)."""
        return max(1, self.channels * self.bit_depth // 8)


def decode_png(data: bytes) -> np.ndarray:
    """An 8- or 16-bit (or 1/2/4-bit gray or palette), non-interlaced PNG."""
    header, palette, compressed = _png_parts(data)
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as error:
        raise ImageError(f"corrupt PNG: image data does not inflate ({error})") from None
    if len(raw) < header.height * (header.row_bytes + 1):
        raise ImageError("corrupt PNG: image data is shorter than the header says")
    samples = _png_samples(_unfilter(raw, header), header)
    if header.colour_type == 3:
        return _apply_palette(samples[:, :, 0], palette)
    if header.colour_type == 0 and header.bit_depth < 8:
        return samples * np.uint8(255 // (2**header.bit_depth - 1))  # 1 -> 255, 2 -> 85, 4 -> 17
    if header.colour_type in (4, 6):
        return samples[:, :, :-1]
    return samples


def _png_chunks(data: bytes):
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 12 + length
        if end > len(data):
            break
        body = data[position + 8 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise ImageError(f"corrupt PNG: bad CRC in the {kind.decode('latin-1')!r} chunk")
        yield kind, body
        if kind == b"IEND":
            return
        position = end
    raise ImageError("truncated PNG (it ends before its IEND chunk)")


def _png_parts(data: bytes) -> tuple[PngHeader, np.ndarray | None, bytes]:
    header: PngHeader | None = None
    palette = None
    compressed = []
    for kind, body in _png_chunks(data):
        if header is None:
            header = _png_header(kind, body)
        elif kind == b"PLTE":
            if len(body) % 3:
                raise ImageError("corrupt PNG: PLTE length is not a multiple of 3")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            compressed.append(body)
    assert header is not None  # _png_chunks yields at least IEND, and the first chunk became the header
    if not compressed:
        raise ImageError("corrupt PNG: no image data (IDAT)")
    return header, palette, b"".join(compressed)


def _png_header(kind: bytes, body: bytes) -> PngHeader:
    if kind != b"IHDR" or len(body) != 13:
        raise ImageError("corrupt PNG: it does not start with a 13-byte IHDR chunk")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if colour not in PNG_COLOUR_TYPES or depth not in PNG_COLOUR_TYPES[colour][1]:
        raise ImageError(f"corrupt PNG: colour type {colour} with bit depth {depth} is not valid PNG")
    if width == 0 or height == 0 or compression != 0 or filtering != 0 or interlace > 1:
        raise ImageError("corrupt PNG: invalid IHDR")
    if interlace:
        raise ImageError("interlaced (Adam7) PNG is not supported; save it again without interlacing")
    return PngHeader(width, height, depth, colour)


def _unfilter(raw: bytes, header: PngHeader) -> np.ndarray:
    """Undo the per-row filters (PNG spec 9.2); returns (height, row_bytes) uint8."""
    stride = header.row_bytes + 1
    lines = np.frombuffer(raw, np.uint8, count=header.height * stride).reshape(header.height, stride)
    filters = lines[:, 0]
    if filters.max() > 4:
        raise ImageError(f"corrupt PNG: unknown row filter {filters.max()}")
    rows = lines[:, 1:].copy()
    prior = np.zeros(header.row_bytes, np.uint8)
    for y, kind in enumerate(filters.tolist()):
        if kind:
            rows[y] = UNFILTERS[kind](rows[y], prior, header.filter_bytes)
        prior = rows[y]
    return rows


def _unfilter_sub(line: np.ndarray, prior: np.ndarray, step: int) -> np.ndarray:
    # each byte adds the decoded byte one pixel left: a running sum per byte lane, wrapping at 256
    lanes = np.zeros(-(-line.size // step) * step, np.uint8)
    lanes[: line.size] = line
    return np.cumsum(lanes.reshape(-1, step), axis=0, dtype=np.uint8).reshape(-1)[: line.size]


def _unfilter_up(line: np.ndarray, prior: np.ndarray, step: int) -> np.ndarray:
    return line + prior  # uint8 arithmetic wraps modulo 256, as the spec asks


# Average and Paeth predict from the *decoded* byte to the left, so a row is a sequential recurrence;
# plain loops over Python ints. (Decoding whole anti-diagonals at once in numpy was measured on 512x512
# photos: the same speed for gray, 2x for RGB; not worth its complexity in a demo.)
def _unfilter_average(line: np.ndarray, prior: np.ndarray, step: int) -> np.ndarray:
    out, up = line.tolist(), prior.tolist()
    for i in range(step):
        out[i] = (out[i] + (up[i] >> 1)) & 0xFF
    for i in range(step, len(out)):
        out[i] = (out[i] + ((out[i - step] + up[i]) >> 1)) & 0xFF
    return np.array(out, np.uint8)


def _unfilter_paeth(line: np.ndarray, prior: np.ndarray, step: int) -> np.ndarray:
    out, up = line.tolist(), prior.tolist()
    for i in range(step):
        out[i] = (out[i] + up[i]) & 0xFF  # left and up-left are 0 here, so Paeth predicts "up"
    for i in range(step, len(out)):
        a, b, c = out[i - step], up[i], up[i - step]
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)  # distances of a, b, c from a + b - c
        out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return np.array(out, np.uint8)


UNFILTERS = {1: _unfilter_sub, 2: _unfilter_up, 3: _unfilter_average, 4: _unfilter_paeth}


def _png_samples(rows: np.ndarray, header: PngHeader) -> np.ndarray:
    height, width, depth = header.height, header.width, header.bit_depth
    if depth < 8:  # gray or palette packed several pixels to a byte, most significant bits first
        bits = np.unpackbits(rows, axis=1)[:, : width * depth].reshape(height, width, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        return (bits * weights).sum(axis=2, dtype=np.uint8)[:, :, None]
    if depth == 16:
        rows = rows.reshape(height, -1, 2)[:, :, 0]  # big-endian: the first byte is the high byte
    return rows.reshape(height, width, header.channels)


def _apply_palette(indices: np.ndarray, palette: np.ndarray | None) -> np.ndarray:
    if palette is None:
        raise ImageError("corrupt PNG: palette image without a PLTE chunk")
    if indices.max() >= len(palette):
        raise ImageError("corrupt PNG: palette index out of range")
    return palette[indices]


def decode_pnm(data: bytes) -> np.ndarray:
    """Binary PGM (P5) or PPM (P6), any maxval up to 65535."""
    channels = 1 if data[:2] == b"P5" else 3
    fields, position = [], 2
    for _ in range(3):
        match = _PNM_NUMBER.match(data, position)
        if match is None or match.start(1) == position:  # fields are separated by whitespace
            raise ImageError("corrupt PGM/PPM header")
        fields.append(int(match.group(1)))
        position = match.end()
    width, height, maxval = fields
    position += 1  # exactly one whitespace byte separates the header from the pixels
    if not (width and height and 0 < maxval < 65536):
        raise ImageError("corrupt PGM/PPM header")
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    count = width * height * channels
    if len(data) - position < count * dtype.itemsize:
        raise ImageError("truncated PGM/PPM (fewer pixels than the header says)")
    pixels = np.frombuffer(data, dtype, count=count, offset=position).reshape(height, width, channels)
    if maxval == 255:
        return pixels.copy()
    return ((pixels.astype(np.uint32) * 255 + maxval // 2) // maxval).astype(np.uint8)


def read_npy(path: Path) -> np.ndarray:
    """A .npy of pixels: (H, W), (H, W, C) or (C, H, W), with any leading size-1 axes; values 0..255
    (float arrays whose maximum is at most 1 are taken as 0..1)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ImageError(f"not a readable .npy file ({error})") from None
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or array.dtype.kind not in "biuf" or not array.size:
        raise ImageError(f"a .npy image must be (H, W[, C]) or (C, H, W) numbers, not {array.dtype} {array.shape}")
    if array.dtype.kind == "f" and array.size and float(np.nanmax(array)) <= 1.0:
        array = array * 255.0
    return np.clip(np.nan_to_num(array[:, :, :3].astype(np.float32)), 0, 255).round().astype(np.uint8)


def read_with_pillow(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        if path.suffix.lower() in PILLOW_SUFFIXES:
            raise ImageError(
                f"reading {path.suffix.lower()} needs Pillow (pip install pillow) or convert to PNG"
            ) from None
        raise ImageError("not a PNG, PGM/PPM or .npy image (other formats need Pillow: pip install pillow)") from None
    try:
        with Image.open(path) as image:
            gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            pixels = np.asarray(image.convert("L" if gray else "RGB"))
    except (OSError, ValueError, SyntaxError) as error:  # Pillow reports broken files with all three
        raise ImageError(f"not an image Pillow can read ({error})") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def to_channels(pixels: np.ndarray, order: str) -> np.ndarray:
    """float32 (H, W, 1) for "gray" (BT.601 luma from RGB), (H, W, 3) for "rgb" or "bgr"."""
    if order == "gray":
        return pixels.astype(np.float32) @ LUMA_601[:, None] if pixels.shape[-1] == 3 else pixels.astype(np.float32)
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[-1] == 1 else pixels
    return (rgb[:, :, ::-1] if order == "bgr" else rgb).astype(np.float32)


def resize_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 (height, width, C): half-pixel-centred bilinear (as OpenCV's INTER_LINEAR), after an
    integer box average when shrinking 2x or more so a large frame does not alias down to a few samples."""
    image = pixels.astype(np.float32)
    box_y, box_x = max(1, image.shape[0] // height), max(1, image.shape[1] // width)
    if box_y > 1 or box_x > 1:
        rows, cols = image.shape[0] // box_y * box_y, image.shape[1] // box_x * box_x
        image = image[:rows, :cols].reshape(rows // box_y, box_y, cols // box_x, box_x, -1).mean(axis=(1, 3))
    if image.shape[:2] == (height, width):
        return image
    y0, y1, wy = _sample_positions(image.shape[0], height)
    x0, x1, wx = _sample_positions(image.shape[1], width)
    image = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    return image[:, x0] * (1 - wx)[None, :, None] + image[:, x1] * wx[None, :, None]


def _sample_positions(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = np.clip((np.arange(target, dtype=np.float32) + 0.5) * (source / target) - 0.5, 0, source - 1)
    low = np.floor(centres).astype(np.intp)
    return low, np.minimum(low + 1, source - 1), (centres - low).astype(np.float32)


def resize_shorter_side(pixels: np.ndarray, size: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    if height <= width:
        return resize_bilinear(pixels, size, max(1, round(width * size / height)))
    return resize_bilinear(pixels, max(1, round(height * size / width)), size)


def centre_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = max(0, (pixels.shape[0] - height) // 2), max(0, (pixels.shape[1] - width) // 2)
    return pixels[top : top + height, left : left + width]
