"""Image files: decoding to uint8 tensors, checking them up front, and a dataset of files.

Every decoded image becomes a uint8 tensor ``[C, S, S]``: converted to ``C`` channels (1 or
3; palette, RGBA, CMYK, 16-bit and grayscale files included, transparency composited over
black), its shorter side resized to ``S`` and the centre cut out. JPEG files are decoded at a
reduced scale first when they are much larger than ``S`` (fast for ImageNet-sized photos).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from comatch.errors import UserError

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in mode ``L`` (1 channel) or ``RGB`` (3), transparency over black."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grayscale
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[C, H, W]`` so its shorter side is ``size``, then cut out the centre ``size x size``."""
    height, width = image.shape[-2:]
    if (height, width) == (size, size):
        return image
    if min(height, width) != size:
        scale = size / min(height, width)
        new = [max(size, round(height * scale)), max(size, round(width * scale))]
        image = F.resize(image, new, antialias=True)
    return F.center_crop(image, [size, size])


def decode_image(path: str, size: int, channels: int) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor ``[channels, size, size]``.

    Raises:
        Exception: whatever PIL raises for a file it cannot read (OSError, SyntaxError, ...).
    """
    with Image.open(path) as image:
        image.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at reduced scale
        image = _to_mode(image, channels)
        array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array  # [H, W, C]
    return fit_square(torch.from_numpy(array.copy()).permute(2, 0, 1), size)


@dataclass(frozen=True)
class FileCheck:
    """What checking one file found.

    Attributes:
        ok: the file decoded.
        short_side: the shorter side of the stored image, pixels (0 when not ok).
        gray: the file stores a grayscale image.
        error: why it could not be read ('' when ok).
    """

    ok: bool
    short_side: int = 0
    gray: bool = False
    error: str = ""


def check_file(path: str, decode: bool = True) -> FileCheck:
    """Open ``path`` and, when ``decode``, decode it cheaply (JPEG at 1/8 scale)."""
    try:
        with Image.open(path) as image:
            short, gray = min(image.size), image.mode in GRAY_MODES
            if decode:
                image.draft(None, (8, 8))
                image.load()
        return FileCheck(True, short, gray)
    except Exception as err:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        return FileCheck(False, error=f"{type(err).__name__}: {err}")


def check_files(paths: Sequence[str], decode: bool = True, threads: int | None = None) -> list[FileCheck]:
    """:func:`check_file` on every path, in a few threads (decoding releases the GIL)."""
    threads = threads or min(8, os.cpu_count() or 1)
    if len(paths) < 64 or threads == 1:
        return [check_file(p, decode) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: check_file(p, decode), paths, chunksize=32))


def unreadable_error(path: str, reason: str) -> UserError:
    """The error that stops a strict run at an unreadable image."""
    return UserError(f"cannot read image {path} ({reason}); repair or delete it, or set "
                     f"data.strict=false to skip unreadable images")


def log_failure(log: Path, path: str, reason: str) -> None:
    """Append ``path<TAB>reason`` to a failure log, safely from several processes at once.

    One ``write`` of one short line to a file opened with ``O_APPEND`` lands whole, whichever
    loader worker (or training process) writes it.
    """
    line = f"{path}\t{' '.join(reason.split())}"[:1000] + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode(errors="replace"))
    finally:
        os.close(fd)


def read_failures(log: Path | None) -> list[str]:
    """The distinct paths a failure log names, in the order first logged ([] without a log)."""
    if log is None or not Path(log).is_file():
        return []
    paths = [line.split("\t", 1)[0] for line in Path(log).read_text(errors="replace").splitlines() if line]
    return list(dict.fromkeys(paths))


class ImageFiles(Dataset):
    """Image files decoded on demand: item ``i`` is ``(uint8 image [C, S, S], label)``.

    Decoding happens in the DataLoader workers. A file that fails to decode here (it was
    readable when checked, or checking was off, or it vanished since) stops the run when
    ``strict``; otherwise the next readable file takes its place, so a run never dies mid-way,
    and the file is appended to :attr:`failure_log` (the trainer sets it to a file in the run
    directory, and counts and lists what it holds in ``summary.json`` and ``data.json``).
    Without a log, one line goes to stderr instead.

    Args:
        paths: image files.
        labels: class index of each file; -1 where unknown.
        size: side length ``S``.
        channels: 1 or 3.
        strict: raise on an unreadable file instead of substituting another.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: int, channels: int,
                 strict: bool = False) -> None:
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths, self.labels = list(paths), torch.as_tensor(list(labels), dtype=torch.long)
        self.size, self.channels, self.strict = size, channels, strict
        self.failure_log: Path | None = None
        self._reported: set[str] = set()  # per process (each loader worker has its own copy)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(min(len(self.paths), 16)):
            i = (index + attempt) % len(self.paths)
            try:
                return decode_image(self.paths[i], self.size, self.channels), int(self.labels[i])
            except Exception as err:  # noqa: BLE001
                if self.strict:
                    raise unreadable_error(self.paths[i], f"{type(err).__name__}: {err}") from err
                self._failed(self.paths[i], f"{type(err).__name__}: {err}")
        raise UserError(f"none of 16 images from {self.paths[index]} on could be read; check the data folder")

    def _failed(self, path: str, reason: str) -> None:
        """Record an image that could not be read (and was replaced by the next one), once per process."""
        if path in self._reported:
            return
        self._reported.add(path)
        if self.failure_log is not None:
            log_failure(self.failure_log, path, reason)
        else:
            print(f"comatch: warning: skipping unreadable image {path} ({' '.join(reason.split())})",
                  file=sys.stderr, flush=True)
