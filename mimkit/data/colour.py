"""Whether a source holds colour or grey images, looked at on a few of them, and the check that it
matches the channels a model takes.

Each image sampled is "colour" (3 or more channels whose colour channels differ somewhere by more
than COLOUR_TOLERANCE), "grey" (stored with 3 or more channels, all equal) or "grey-stored"
(stored with 1 or 2 channels). A model with 1 or 2 input channels takes grey images, one with 3 or
4 colour. Unless the user asked for the conversion (data.convert_channels=true, --convert-channels),
it is an error when any sampled image is colour and the model grey (colour would silently be lost),
or when every sampled image is stored grey and the model colour (the grey channel would be
repeated: usually a forgotten model.in_chans). A few grey files among colour ones (as in ImageNet)
are repeated into RGB without a word.
"""
import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .decode import pil_to_array

COLOUR_TOLERANCE = 4 / 255
SAMPLE = 16  # images looked at


def image_kind(array: np.ndarray | torch.Tensor, channel_axis: int) -> str:
    """"colour", "grey" or "grey-stored" for one image array with a channel axis (module rule)."""
    array = torch.as_tensor(np.asarray(array, dtype=np.float32) if isinstance(array, np.ndarray) else array).float()
    if array.shape[channel_axis] < 3:
        return "grey-stored"
    colour = array.narrow(channel_axis, 0, 3)
    spread = colour.amax(dim=channel_axis) - colour.amin(dim=channel_axis)
    return "colour" if spread.max() > COLOUR_TOLERANCE * (255 if array.max() > 1 else 1) else "grey"


def file_kind(path: str) -> str | None:
    """image_kind of an image file (None when it cannot be read: reading errors belong to the loader)."""
    try:
        with Image.open(path) as img:
            img.draft(img.mode, (64, 64))
            img.thumbnail((64, 64))
            return image_kind(pil_to_array(img), channel_axis=2)
    except Exception:  # noqa: BLE001 - any unreadable file is judged later by the dataset itself
        return None


def sample_positions(size: int, count: int = SAMPLE) -> list[int]:
    """Up to `count` positions spread evenly over 0..size-1 (every class of a sorted folder is seen)."""
    return sorted({round(i * (size - 1) / max(count - 1, 1)) for i in range(min(count, size))})


def kinds_of_images(images: torch.Tensor) -> list[str]:
    """uint8 or float (N, C, H, W) -> the kinds of a sample of them."""
    return [image_kind(images[i], channel_axis=0) for i in sample_positions(len(images))]


def kinds_of_files(files: list[str]) -> list[str]:
    """The kinds of a sample of image files (unreadable ones left out)."""
    return [k for k in (file_kind(files[i]) for i in sample_positions(len(files))) if k is not None]


def check_channels(kinds: list[str], channels: int, source: str, convert: bool) -> None:
    """DataError when the sampled kinds do not fit a model of `channels` inputs, unless `convert`."""
    if convert or not kinds:
        return
    if channels < 3 and "colour" in kinds:
        raise DataError(f"{source} holds colour images but the model takes {channels} channel(s) (grey): they would "
                        "be turned grey; set model.in_chans=3 to use the colour, or convert them on purpose with "
                        "data.convert_channels=true (--convert-channels for other commands)")
    if channels >= 3 and all(k == "grey-stored" for k in kinds):
        raise DataError(f"{source} holds grey images but the model takes {channels} channels (colour); set "
                        "model.in_chans=1, or repeat the grey channel on purpose with data.convert_channels=true "
                        "(--convert-channels for other commands)")
