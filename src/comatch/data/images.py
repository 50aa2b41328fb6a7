"""Image files: the one decoding pipeline, checking files up front, and a dataset of files.

:func:`decode_image` is the only way an image file becomes network input, in training, in the
trainer's evaluation, in ``comatch evaluate --test`` and in ``comatch predict``; ``comatch
export`` writes :func:`pipeline_description` beside the exported model. Every decoded image
becomes a uint8 tensor ``[C, S, S]``:

1. mode conversion to ``C`` channels (1: ``L``, 3: ``RGB``): a palette image is expanded to
   RGBA; RGBA, LA and PA images (and palette transparency) are composited over opaque black;
   16-bit grayscale becomes ``floor(v / 257)``; gray to RGB repeats the value, RGB to gray is
   Pillow's ITU-R 601 luma ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``;
2. the shorter side is resized to ``S`` (bilinear, antialiased), the longer one to
   ``max(S, round(L * S / shorter))``;
3. the centre ``S x S`` is cut out (offset ``round((H - S) / 2)``, Python rounding).

JPEG files are decoded at a reduced scale first (DCT scaling by 1/2, 1/4 or 1/8 while both
sides stay at least ``S``), fast for ImageNet-sized photos; for ``C = 1`` libjpeg decodes a
colour JPEG straight to its luma.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from comatch.errors import DataChanged, UserError

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L"})
TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA"})


class UnreadableImage(Exception):
    """An image file that cannot be decoded; the message says why."""


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit ``L``.

    16-bit values map to ``floor(v / 257)`` (65535 -> 255). Modes ``I`` and ``F`` carry no
    bit depth: values above 255 are read as 16-bit, otherwise as 8-bit.
    """
    array = np.asarray(image)
    if image.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray((array.astype(np.uint32) // 257).astype(np.uint8))
    top = 65535.0 if array.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(array.astype(np.float64) / top * 255.0, 0, 255).astype(np.uint8))


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in mode ``L`` (``channels`` 1) or ``RGB`` (3), transparency over opaque black.

    Args:
        image: any Pillow image.
        channels: 1 or 3.

    Returns:
        The converted image (may be ``image`` itself when nothing changes).
    """
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # palette colours, tRNS transparency included
    if image.mode in TRANSPARENT_MODES:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode in ("I", "F") or image.mode in SIXTEEN_BIT_MODES:
        image = _wide_to_8bit(image)
    return image.convert("L" if channels == 1 else "RGB")


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[..., H, W]`` so its shorter side is ``size``, then cut out the centre ``size x size``.

    Args:
        image: uint8 ``[C, H, W]`` or ``[N, C, H, W]``.
        size: the side ``S`` of the result.

    Returns:
        ``[..., S, S]`` (``image`` itself when it already is ``S x S``).
    """
    height, width = image.shape[-2:]
    if (height, width) == (size, size):
        return image
    if min(height, width) != size:
        scale = size / min(height, width)
        new = [max(size, round(height * scale)), max(size, round(width * scale))]
        image = F.resize(image, new, antialias=True)
    return F.center_crop(image, [size, size])


View = Callable[[torch.Tensor], torch.Tensor]
"""A view of one image: uint8 ``[C, H, W]`` to uint8 ``[C, S, S]``."""


class ResizeIfNeeded:
    """The evaluation view: resize to a square ``size`` (bilinear, antialiased) unless already
    that size. Works on one image ``[C, H, W]`` or a batch ``[N, C, H, W]``.

    Args:
        size: Output side length.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` resized to ``[..., size, size]`` if needed."""
        if tuple(img.shape[-2:]) == (self.size, self.size):
            return img
        return F.resize(img, [self.size, self.size], antialias=True)


def _open_pixels(path: str | Path, size: int, channels: int) -> np.ndarray:
    """The converted pixels of ``path``, ``[H, W]`` or ``[H, W, 3]`` uint8."""
    with Image.open(path) as image:
        image.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at reduced scale
        return np.asarray(to_mode(image, channels), dtype=np.uint8)


def decode_image(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """Read an image file as network input: uint8 ``[channels, size, size]`` (see the module docstring).

    Args:
        path: any file Pillow reads (PNG, JPEG, BMP, WebP, TIFF, ...).
        size: the side ``S``.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        uint8 ``[channels, size, size]``.

    Raises:
        UnreadableImage: the file is missing, a folder, not an image, or damaged; the message
            says which.
    """
    try:
        array = _open_pixels(path, size, channels)
    except FileNotFoundError:
        raise UnreadableImage("no such file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not an image") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file, or damaged") from None
    except Exception as err:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise UnreadableImage(f"cannot decode ({type(err).__name__}: {err})") from None
    array = array[:, :, None] if array.ndim == 2 else array  # [H, W, C]
    return fit_square(torch.from_numpy(array.copy()).permute(2, 0, 1), size)  # [C, S, S]


def pipeline_description(size: int, channels: int) -> dict[str, Any]:
    """What :func:`decode_image` does, step by step, for a consumer outside Python.

    Args:
        size: the side ``S``.
        channels: 1 or 3.

    Returns:
        A JSON-ready dict: ``steps`` in order, plus the resize and crop arithmetic.
    """
    mode = "grayscale (Pillow mode L)" if channels == 1 else "RGB"
    return {
        "steps": [
            "JPEG only: decode at scale 1/a, a the largest of 8, 4, 2, 1 not above "
            f"min(W // {size}, H // {size}) (libjpeg DCT scaling, Pillow Image.draft)"
            + ("; colour JPEGs are decoded straight to libjpeg's luma" if channels == 1 else ""),
            "palette images: expand to RGBA (palette transparency included)",
            "RGBA, LA, PA: composite over opaque black: out = round(value * alpha / 255)",
            "16-bit grayscale: value // 257",
            f"convert to {mode}" + (": L = R*299/1000 + G*587/1000 + B*114/1000 (ITU-R 601)"
                                    if channels == 1 else ": gray values repeated in R, G, B"),
            f"resize so the shorter side is {size}: bilinear, antialiased (torchvision "
            "resize, antialias=True); the longer side becomes max(S, round(L * S / shorter))",
            f"cut out the centre {size}x{size}: top = round((H - S) / 2), left = round((W - S) / 2) "
            "(round half to even)",
        ],
        "resize": {"shorter_side": size, "interpolation": "bilinear", "antialias": True},
        "crop": {"center": [size, size]},
        "channels": channels,
    }


@dataclass(frozen=True, slots=True)
class FileCheck:
    """What checking one file found.

    Attributes:
        ok: the file decoded, or (``decoded`` False) is not known to be unreadable.
        short_side: the shorter side of the stored image, pixels (0 when its header was not read).
        gray: the file stores a grayscale image.
        error: why it could not be read ('' when ok).
        digest: a hash of the file's bytes ('' when they were not read), to find the same
            image under two names.
        size: the file's length in bytes (-1 when unknown).
        decoded: whether it was decoded; a file that was not (outside the check sample of a
            large folder) is decoded when training first reads it.
    """

    ok: bool
    short_side: int = 0
    gray: bool = False
    error: str = ""
    digest: str = ""
    size: int = -1
    decoded: bool = True


NOT_DECODED = FileCheck(True, decoded=False)
"""The check of a file that was neither decoded nor read (one object shared by all of them)."""


def _read(path: str) -> bytes:
    """The bytes of ``path`` (unbuffered: one small file costs a third less than ``Path.read_bytes``)."""
    with open(path, "rb", buffering=0) as handle:
        return handle.read()


GRAY_TOLERANCE = 2
"""Largest difference between a pixel's R, G and B that still counts as grey (JPEG's colour
coding leaves a unit or two in a grey image saved as RGB)."""


def holds_gray_only(path: str, side: int = 64) -> bool:
    """Whether an image file holds greys only (its R, G and B within :data:`GRAY_TOLERANCE`),
    whatever its mode: a grayscale image saved as RGB, as many converters write them. Decoded
    at reduced scale where the format allows it (JPEG); False when it cannot be read."""
    import numpy as np

    try:
        with Image.open(path) as image:
            if image.mode in GRAY_MODES:
                return True
            image.draft("RGB", (side, side))
            rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    except Exception:  # noqa: BLE001 -- unreadable files are met (and counted) when the data is loaded
        return False
    spread = np.maximum(np.abs(rgb[..., 0] - rgb[..., 1]), np.abs(rgb[..., 1] - rgb[..., 2]))
    return int(spread.max(initial=0)) <= GRAY_TOLERANCE


def _digest(data: bytes) -> str:
    """The hash of a file's bytes that finds the same image under two names."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _failure(err: Exception, **found: Any) -> FileCheck:
    """The check of a file that could not be read, saying why."""
    if isinstance(err, UnidentifiedImageError):
        return FileCheck(False, error="not an image file, or damaged", **found)
    return FileCheck(False, error=f"{type(err).__name__}: {err}", **found)


def check_file(path: str, decode: bool = True) -> FileCheck:
    """Open ``path`` and, when ``decode``, read it once: hash its bytes and decode them cheaply
    (JPEG at 1/8 scale; an animated image's first frame). Without ``decode`` only the header
    is read."""
    found: dict[str, Any] = {}
    try:
        source: Any = path
        if decode:
            data = _read(path)
            found = {"digest": _digest(data), "size": len(data)}
            source = io.BytesIO(data)
        with Image.open(source) as image:
            short, gray = min(image.size), image.mode in GRAY_MODES
            if decode:
                image.draft(None, (8, 8))
                image.load()
        return FileCheck(True, short, gray, decoded=decode, **found)
    except Exception as err:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        return _failure(err, decoded=decode, **found)


def hash_file(path: str) -> FileCheck:
    """Read ``path`` and hash its bytes, without decoding them (``decoded`` False)."""
    try:
        data = _read(path)
    except Exception as err:  # noqa: BLE001 -- missing, a folder, no permission, ...
        return _failure(err, decoded=False)
    return FileCheck(True, digest=_digest(data), size=len(data), decoded=False)


def file_size(path: str) -> int:
    """The length of ``path`` in bytes (links followed), from the file system alone; -1 when
    it cannot be had (missing, a broken link, no permission)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def check_files(paths: Sequence[str], decode: bool = True, threads: int | None = None) -> list[FileCheck]:
    """:func:`check_file` on every path, in a few threads (decoding releases the GIL)."""
    return in_threads(lambda p: check_file(p, decode), paths, threads)


def in_threads(function: Callable[[str], Any], paths: Sequence[str], threads: int | None = None,
               chunk: int = 256) -> list[Any]:
    """``[function(p) for p in paths]``, in a few threads, the paths handed out ``chunk`` at a
    time (one task per path would cost more than a ``stat``); for work that releases the GIL
    (reading, hashing, decoding, system calls)."""
    threads = threads or min(8, os.cpu_count() or 1)
    if len(paths) < 64 or threads == 1:
        return [function(p) for p in paths]
    chunk = max(1, min(chunk, len(paths) // (4 * threads)))  # a few parts per thread, to share the work
    parts = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(threads) as pool:
        return [found for part in pool.map(lambda part: [function(p) for p in part], parts) for found in part]


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
    readable when checked, or was not checked: checking was off, or the file was outside the
    check sample of a large folder; or it vanished since) stops the run when ``strict``;
    otherwise another file takes its place, so a run never dies mid-way: the one
    ``max(1, len // 16)`` places on, then as many again, up to 16 tries (a run of unreadable
    files, say a damaged sub-folder, is stepped over). The file is appended to :attr:`failure_log` (the trainer sets it to a file in the run
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
        stride = max(1, len(self.paths) // 16)
        for attempt in range(min(len(self.paths), 16)):
            i = (index + attempt * stride) % len(self.paths)
            try:
                return decode_image(self.paths[i], self.size, self.channels), int(self.labels[i])
            except UnreadableImage as err:
                if self.strict:
                    raise unreadable_error(self.paths[i], str(err)) from err
                self._failed(self.paths[i], str(err))
        raise DataChanged(f"none of {min(len(self.paths), 16)} images spread over the data from {self.paths[index]} "
                          f"on could be read (moved, deleted or damaged since the run started)")

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
