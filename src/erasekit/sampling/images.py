"""Reading the user's images for the image-based paths (purification, concept inversion), resized to the model's
resolution."""
from __future__ import annotations

from pathlib import Path

from ..errors import ErasekitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_images(paths: list, size: int) -> list:
    """RGB PIL images resized to `size` × `size`; an unreadable file is an ErasekitError naming it."""
    from PIL import Image, UnidentifiedImageError
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB").resize((size, size), Image.BICUBIC))
        except (OSError, UnidentifiedImageError) as e:
            raise ErasekitError(f"cannot read image {path}: {e}") from None
    return images


def read_image_folder(folder, size: int) -> list:
    """Every image file of a folder (by suffix, sorted by name) read as `read_images` does; a missing folder or
    one without images is an ErasekitError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ErasekitError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ErasekitError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return read_images(paths, size)
