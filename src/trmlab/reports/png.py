"""ARC grids as small PNG images, written with the standard library only (no matplotlib needed for grids)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

# The usual ARC palette, colour 0..9.
ARC_PALETTE = np.array([
    (0x00, 0x00, 0x00), (0x00, 0x74, 0xD9), (0xFF, 0x41, 0x36), (0x2E, 0xCC, 0x40), (0xFF, 0xDC, 0x00),
    (0xAA, 0xAA, 0xAA), (0xF0, 0x12, 0xBE), (0xFF, 0x85, 0x1B), (0x7F, 0xDB, 0xFF), (0x87, 0x0C, 0x25),
], dtype=np.uint8)
GRID_LINE = np.array((0x55, 0x55, 0x55), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 image [H, W, 3] as PNG bytes (8-bit truecolour, no filtering)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _chunk(b"IEND", b""))


def grid_image(grid: np.ndarray | list, cell: int = 10, palette: np.ndarray = ARC_PALETTE) -> np.ndarray:
    """A grid of colour indices (ARC: 0..9) drawn as cells of ``cell`` pixels with 1-pixel grid lines."""
    cells = np.asarray(grid, dtype=np.int64)
    h, w = cells.shape
    step = cell + 1
    image = np.empty((h * step + 1, w * step + 1, 3), dtype=np.uint8)
    image[:] = GRID_LINE
    colours = palette[np.clip(cells, 0, len(palette) - 1)]
    for dy in range(cell):
        for dx in range(cell):
            image[1 + dy::step, 1 + dx::step][:h, :w] = colours
    return image


def grid_data_uri(grid: np.ndarray | list, max_pixels: int = 180) -> str | None:
    """``data:image/png;base64,...`` of a grid (None for an empty grid), cells sized to fit ``max_pixels``."""
    cells = np.asarray(grid)
    if cells.ndim != 2 or cells.size == 0:
        return None
    cell = max(2, min(14, (max_pixels - 1) // max(cells.shape) - 1))
    return "data:image/png;base64," + base64.b64encode(encode_png(grid_image(cells, cell))).decode()
