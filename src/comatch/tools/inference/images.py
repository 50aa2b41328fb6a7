"""Image files for inference: finding them, and labelled test folders.

Decoding is not done here: every file goes through :func:`comatch.data.images.decode_image`,
the pipeline the trainer uses (mode conversion, transparency over black, shorter side resized
to the model's size, centre crop), so ``predict`` and ``evaluate --test`` give a file exactly
the network input the trainer's evaluation gives it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from comatch.data.images import UnreadableImage, decode_image
from comatch.data.scan import IMAGE_EXTENSIONS, Scan, Walker, class_folders, walk_images
from comatch.data.scan import find_images as scan_folder
from comatch.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "LabelledFolder", "UnreadableImage", "data_skipped_line", "find_images", "skipped_line"]


def find_images(paths: Iterable[str | Path]) -> Scan:
    """The image files named by ``paths``: files as given, folders searched recursively by the
    one rule of :mod:`comatch.data.scan` (hidden files and folders skipped, links followed once).

    Args:
        paths: files and folders. A path that does not exist is kept, so that the caller
            reports it like any other unreadable image.

    Returns:
        ``files`` in the order given, each folder's images sorted by path; what was skipped.
    """
    found = Scan()
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(scan_folder(path))
        else:
            found.files.append(str(path))
    return found


def skipped_line(scan: Scan, limit: int = 10) -> str | None:
    """One ``comatch: note: ...`` line naming what a command's scan skipped (None when nothing)."""
    if not scan.ignored:
        return None
    shown = ", ".join(scan.ignored[:limit]) + (f" and {len(scan.ignored) - limit} more" if len(scan.ignored) > limit else "")
    return f"comatch: note: skipped {scan.summary()}: {shown}"


def data_skipped_line(data: Any, limit: int = 10) -> str | None:
    """One ``comatch: note: ...`` line for what a run's data left out when it was loaded again
    (``suggest``, ``baseline``): hidden files, link loops, unreadable images (None when nothing)."""
    left_out = list(data.ignored) + list(data.skipped)
    if not left_out:
        return None
    shown = ", ".join(left_out[:limit]) + (f" and {len(left_out) - limit} more" if len(left_out) > limit else "")
    return (f"comatch: note: the run's folders: skipped {len(data.ignored)} hidden file(s), folder(s) or "
            f"repeated link(s) and {len(data.skipped)} unreadable image(s): {shown}")


class LabelledFolder(Dataset):
    """A test folder in the ImageFolder layout: ``DIR/CLASS_NAME/**/image``, found by the one rule of
    :mod:`comatch.data.scan` (what it skipped is in :attr:`scan`).

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
        walker = Walker()
        folders = class_folders(root, walker)
        unknown = [name for name, _ in folders if name not in index]
        if unknown:
            raise UserError(
                f"test folder {root} has sub-folders that are not classes of the model: "
                f"{', '.join(unknown[:5])}; the model knows: {', '.join(class_names[:20])}"
            )
        top = os.path.realpath(root)
        self.items = [(Path(file), index[name]) for name, folder in folders
                      for file in walk_images(folder, walker, (top,))]
        self.scan = walker.scan
        if not self.items:
            raise UserError(f"test folder {root} holds no images in class sub-folders ({', '.join(IMAGE_EXTENSIONS)})")
        self.channels, self.size = channels, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        try:
            return decode_image(path, self.size, self.channels), label
        except UnreadableImage as err:
            raise UserError(f"test image {path} cannot be read ({err}); remove or replace it") from None
