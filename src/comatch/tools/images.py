"""Image files for inference: finding them, and labelled test folders.

Decoding is not done here: every file goes through :func:`comatch.data.images.decode_image`,
the pipeline the trainer uses (mode conversion, transparency over black, shorter side resized
to the model's size, centre crop), so ``predict`` and ``evaluate --test`` give a file exactly
the network input the trainer's evaluation gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from comatch.data.images import UnreadableImage, decode_image
from comatch.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "LabelledFolder", "UnreadableImage", "find_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""File endings (any case) collected from folders; files named explicitly are always tried."""


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


class LabelledFolder(Dataset):
    """A test folder in the ImageFolder layout: ``DIR/CLASS_NAME/**/image`` (hidden folders skipped).

    Item ``i`` is ``(uint8 image [C, S, S], label)``, decoded by
    :func:`~comatch.data.images.decode_image`; the label is the index of the sub-folder's name
    among the model's class names.

    Args:
        root: the folder.
        class_names: the model's classes, in label order.
        channels: the model's channel count ``C``.
        size: the model's image size ``S``.

    Raises:
        UserError: the folder is missing, holds no class sub-folders with images, or a
            sub-folder is not one of ``class_names``.
    """

    def __init__(self, root: Path, class_names: Sequence[str], channels: int, size: int) -> None:
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
        self.channels, self.size = channels, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        try:
            return decode_image(path, self.size, self.channels), label
        except UnreadableImage as err:
            raise UserError(f"test image {path} cannot be read ({err}); remove or replace it") from None
