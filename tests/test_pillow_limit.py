"""Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) follows data.max_image_pixels while
mimkit decodes: an image above the setting is refused with mimkit's message, one within it decodes
without Pillow's error or warning, and Pillow's limit is back to its own value afterwards."""
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.data import decode_image
from mimkit.data.config import DataConfig
from mimkit.data.decode import UnusableImage, open_checked
from mimkit.data.factory import build_dataset
from mimkit.errors import DataError


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and 1-bit grey IHDR claiming width x height, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def gradient(tmp_path):
    """A 40x40 grey PNG (1600 pixels) whose pixel (y, x) is 6 * x."""
    path = tmp_path / "gradient.png"
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (40, 1))).save(path)
    return path


def test_header_above_pillows_error_limit_gets_mimkits_message(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 10000))  # 200 MP: above Pillow's default error limit (~179 MP)
    with pytest.raises(UnusableImage, match=r"20000x10000 is 200.0 megapixels, more than "
                                            r"data.max_image_pixels=100000000"):
        decode_image(path, 1, 8, max_pixels=100_000_000)
    with open_checked(path, 300_000_000, 1) as img:  # allowed: Pillow's check no longer refuses the header
        assert img.size == (20000, 10000)


def test_setting_above_pillows_limit_decodes(monkeypatch, gradient):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow alone refuses 1600 > 2 * 500 pixels
    with pytest.raises(Image.DecompressionBombError):
        Image.open(gradient)
    image = decode_image(gradient, 1, 40, max_pixels=1600)
    assert torch.allclose(image[0, 7], torch.arange(40) * 6 / 255)
    assert Image.MAX_IMAGE_PIXELS == 500  # restored


def test_setting_below_the_image_refuses_naming_the_setting(monkeypatch, gradient):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(UnusableImage, match=r"40x40 is 0.0 megapixels, more than data.max_image_pixels=1599 "):
        decode_image(gradient, 1, 8, max_pixels=1599)
    assert Image.MAX_IMAGE_PIXELS == 500


def test_no_pillow_warning_up_to_the_setting(monkeypatch, gradient):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone warns for 1000 < 1600 <= 2000
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(gradient).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_image(gradient, 1, 8, max_pixels=1600)


def test_data_max_image_pixels_reaches_the_folder_reader(monkeypatch, gradient):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    allowed = build_dataset(DataConfig(name=str(gradient.parent), image_size=8, max_image_pixels=2000), channels=1)
    assert allowed[0]["images"].shape == (1, 8, 8)
    refused = build_dataset(DataConfig(name=str(gradient.parent), image_size=8, max_image_pixels=1000), channels=1)
    with pytest.raises(DataError, match="more than data.max_image_pixels=1000"):
        refused[0]


def test_threads_with_different_settings(monkeypatch, gradient):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)

    def decode(max_pixels: int) -> str:
        try:
            decode_image(gradient, 1, 8, max_pixels=max_pixels)
            return "ok"
        except UnusableImage:
            return "refused"

    limits = [1600, 1000, 5000, 1599] * 10
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decode, limits))
    assert results == ["ok" if limit >= 1600 else "refused" for limit in limits]
    assert Image.MAX_IMAGE_PIXELS == 500
