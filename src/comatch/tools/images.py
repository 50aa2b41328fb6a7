"""Image files for inference: finding them, reading them, and labelled test folders.

Every image is read as a uint8 tensor ``[C, H, W]`` with the channel count the model was
trained with (``C = 1``: grayscale, ``C = 3``: RGB), so a colour photo can be given to a
grayscale model and the other way round. Resizing and normalisation happen later, exactly as
in the trainer's evaluation view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from comatch.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""File endings (any case) collected from folders; files named explicitly are always tried."""


class UnreadableImage(Exception):
    """An image file that cannot be decoded; the message says why."""


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders searched recursively.

    Args:
        paths: files and folders. A path that does not exist is kept, so that the caller
            reports it like any other unreadable image.

    Returns:
        Files in the order given; each folder's images sorted by path.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Decode one image file to uint8 ``[channels, H, W]``.

    Args:
        path: a PNG, JPEG, BMP or WebP file (anything Pillow reads).
        channels: 1 converts to grayscale (ITU-R 601 luma), 3 to RGB (alpha is dropped).

    Returns:
        The image, uint8 ``[channels, H, W]``.

    Raises:
        UnreadableImage: the file is missing, not an image, or damaged.
    """
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except FileNotFoundError:
        raise UnreadableImage("no such file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not an image") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file, or damaged") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"cannot decode ({type(err).__name__}: {err})") from None
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()  # [C, H, W]


class LabelledFolder(Dataset):
    """A test folder in the ImageFolder layout: ``DIR/CLASS_NAME/**/image`` (hidden folders skipped).

    Item ``i`` is ``(uint8 image [C, H, W], label)``, where the label is the index of the
    sub-folder's name among the model's class names.

    Args:
        root: the folder.
        class_names: the model's classes, in label order.
        channels: the model's channel count.

    Raises:
        UserError: the folder is missing, holds no class sub-folders with images, or a
            sub-folder is not one of ``class_names``.
    """

    def __init__(self, root: Path, class_names: Sequence[str], channels: int) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"test folder {root} does not exist; give a folder with one sub-folder per class")
        index = {name: i for i, name in enumerate(class_names)}
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise UserError(
                f"test folder {root} has sub-folders that are not classes of the model: "
                f"{', '.join(unknown[:5])}; the model knows: {', '.join(class_names[:20])}"
            )
        self.items = [
            (file, index[folder.name])
            for folder in folders
            for file in find_images([folder])
        ]
        if not self.items:
            raise UserError(f"test folder {root} holds no images in class sub-folders ({', '.join(IMAGE_SUFFIXES)})")
        self.channels = channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        try:
            return read_image(path, self.channels), label
        except UnreadableImage as err:
            raise UserError(f"test image {path} cannot be read ({err}); remove or replace it") from None
