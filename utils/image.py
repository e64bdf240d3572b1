"""Reading images robustly and turning them into network input.

Every script reads pictures through ``open_rgb`` so that odd files (16-bit, CMYK, palette, EXIF-rotated,
truncated, not an image at all) behave the same everywhere: either an RGB image or one clear error.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.config import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(UserError, ValueError):
    """A file that cannot be used as an image; the message is one line naming the file."""


def is_image_file(name: str) -> bool:
    """True when ``name`` has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str) -> list[str]:
    """Image files under ``root`` as sorted relative paths, leaving out hidden files and folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files
                  if is_image_file(f) and not f.startswith(".")]
    return sorted(found)


def open_rgb(path: str) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image with its EXIF orientation applied."""
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    return decode(path, path)


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """``open_rgb`` for encoded image bytes (a RecordIO record, a .bin entry); ``name`` says where from."""
    if not data:
        raise ImageError(f"{name}: no image data (0 bytes)")
    return decode(io.BytesIO(data), name)


def decode(source: str | io.BytesIO, name: str) -> Image.Image:
    """Decode a file or buffer fully into 8-bit RGB with its EXIF orientation applied; errors name ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # no copy: a 12000x12000 photo is 432 MB
                return to_rgb(image)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: too large to decode safely (over {2 * Image.MAX_IMAGE_PIXELS} pixels); "
                         "shrink it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: damaged or truncated image ({err})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; 16/32-bit greyscale is scaled to 8 bits, alpha is dropped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def resize_image(image: Image.Image, size: tuple[int, int], letterbox: bool) -> Image.Image:
    """Resize to ``size`` = (width, height); with ``letterbox`` keep the aspect ratio and pad with grey 128."""
    width, height = size
    if not letterbox:
        return image.resize((width, height), Image.BICUBIC)
    iw, ih = image.size
    scale = min(width / iw, height / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(image.resize((nw, nh), Image.BICUBIC), ((width - nw) // 2, (height - nh) // 2))
    return canvas


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float32 (3, H, W) tensor with pixels / 255, as the original repository feeds them."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def preprocess(image: Image.Image, input_shape: list[int] | tuple[int, ...], letterbox: bool) -> torch.Tensor:
    """Resize an RGB image to ``input_shape`` = [height, width, 3] and return the network input tensor."""
    return to_tensor(resize_image(image, (input_shape[1], input_shape[0]), letterbox))
