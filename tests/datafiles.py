"""Writers of tiny datasets in their publishers' file formats, for tests.

Each writer fills a folder with random images in exactly the layout the publisher
distributes, and returns what it wrote (uint8 ``[N, C, H, W]`` arrays and labels), so tests can
compare what the readers return pixel for pixel.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Written:
    """Images ``[N, C, H, W]`` (uint8) and labels of one written split."""

    images: np.ndarray
    labels: np.ndarray


def _images(rng: np.random.Generator, n: int, size: int, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def _balanced(n: int, classes: int) -> np.ndarray:
    return np.arange(n) % classes


def write_cifar10(root: Path, per_batch: int = 4, test: int = 10, seed: int = 0) -> dict[str, Written]:
    """``root/cifar-10-batches-py/``: data_batch_1..5, test_batch, batches.meta (Python pickles)."""
    rng, folder = np.random.default_rng(seed), Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": [], "test": []}
    train_labels = rng.permutation(_balanced(5 * per_batch, 10)).reshape(5, per_batch)  # balanced overall
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", test)]:
        labels = rng.permutation(_balanced(n, 10)) if name == "test_batch" else train_labels[int(name[-1]) - 1]
        images = _images(rng, n, 32)
        entry = {"batch_label": name, "labels": labels.tolist(), "data": images.reshape(n, 3072),
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        parts["test" if name == "test_batch" else "train"].append(Written(images, labels))
    meta = {"num_cases_per_batch": per_batch, "label_names": [f"class{c}" for c in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {k: Written(np.concatenate([w.images for w in v]), np.concatenate([w.labels for w in v]))
            for k, v in parts.items()}


def write_cifar100(root: Path, train: int = 200, test: int = 100, seed: int = 0) -> dict[str, Written]:
    """``root/cifar-100-python/``: train, test, meta (fine and coarse labels)."""
    rng, folder = np.random.default_rng(seed), Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", train), ("test", test)):
        images, fine = _images(rng, n, 32), rng.permutation(_balanced(n, 100))
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": name,
                 "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                 "data": images.reshape(n, 3072)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        out[name] = Written(images, fine)
    meta = {"fine_label_names": [f"fine{c}" for c in range(100)],
            "coarse_label_names": [f"coarse{c}" for c in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def write_stl10(root: Path, train: int = 20, unlabeled: int = 10, test: int = 10, seed: int = 0) -> dict[str, Written]:
    """``root/stl10_binary/``: *_X.bin (column-major 96x96 images), *_y.bin (labels 1..10), extras."""
    rng, folder = np.random.default_rng(seed), Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", train), ("unlabeled", unlabeled), ("test", test)):
        images = _images(rng, n, 96)
        (folder / f"{name}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())  # columns first
        labels = rng.permutation(_balanced(n, 10)) if name != "unlabeled" else np.full(n, -1)
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[name] = Written(images, labels)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    (folder / "fold_indices.txt").write_text("\n".join(" ".join(map(str, range(f, train, 10))) for f in range(10)) + "\n")
    return out


def write_svhn(root: Path, train: int = 20, test: int = 10, extra: int = 0, seed: int = 0) -> dict[str, Written]:
    """``root/{train,test,extra}_32x32.mat``: X [32, 32, 3, N] uint8, y [N, 1] with 10 for digit 0."""
    from scipy.io import savemat

    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", train), ("test", test), ("extra", extra)):
        if n == 0:
            continue
        images, digits = _images(rng, n, 32), rng.permutation(_balanced(n, 10))
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # [N, 1]
        savemat(root / f"{name}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})  # [H, W, C, N]
        out[name] = Written(images, digits)
    return out


def save_image(path: Path, array: np.ndarray, mode: str = "RGB", fmt: str | None = None) -> None:
    """Write ``array`` ([H, W, C] or [H, W] uint8) as an image file in ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.squeeze())
    if mode == "P":
        image = image.convert("RGB").quantize(16)
    elif image.mode != mode:
        image = image.convert(mode)
    image.save(path, format=fmt)


def write_class_folder(root: Path, classes: list[str], per_class: int, seed: int = 0,
                       size: tuple[int, int] = (40, 48), suffix: str = ".png") -> list[Path]:
    """``root/CLASS/i.png`` (ImageFolder layout), RGB images of ``size`` (height, width)."""
    rng = np.random.default_rng(seed)
    written = []
    for name in classes:
        for i in range(per_class):
            path = Path(root) / name / f"{name}_{i}{suffix}"
            save_image(path, rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
            written.append(path)
    return written


def write_imagenet(root: Path, classes: int = 3, train: int = 6, val: int = 2, seed: int = 0) -> None:
    """``root/train/WNID/WNID_i.JPEG`` and ``root/val/WNID/...`` with JPEGs of mixed sizes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            wnid = f"n{c:08d}"
            for i in range(n):
                h, w = rng.integers(40, 90, size=2)
                save_image(Path(root) / split / wnid / f"{wnid}_{i}.JPEG",
                           rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), fmt="JPEG")


def truncated_jpeg(seed: int = 0) -> bytes:
    """The first half of a valid JPEG file."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def write_user_tree(root: Path, per_class: int = 6, unlabeled: int = 8, seed: int = 0) -> dict[str, Path]:
    """A user's folders: ``labeled/{cat,dog,fox}``, ``unlabeled/`` (nested), ``test/``.

    The labelled folder mixes PNG, JPEG, BMP and WebP files of different sizes; one image each
    is grayscale, RGBA and palette; it also holds a zero-byte ``.png`` and a truncated JPEG
    (the two unreadable files). The unlabelled folder has images at two depths.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    classes = ["cat", "dog", "fox"]
    write_class_folder(root / "labeled", classes, per_class, seed, size=(40, 52))
    odd = root / "labeled" / "cat"
    save_image(odd / "gray.png", rng.integers(0, 256, (30, 30), dtype=np.uint8), mode="L")
    save_image(odd / "alpha.png", rng.integers(0, 256, (36, 36, 4), dtype=np.uint8), mode="RGBA")
    save_image(root / "labeled" / "dog" / "palette.png", rng.integers(0, 256, (33, 40, 3), dtype=np.uint8), mode="P")
    save_image(root / "labeled" / "dog" / "photo.jpg", rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    save_image(root / "labeled" / "fox" / "bitmap.bmp", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    save_image(root / "labeled" / "fox" / "web.webp", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (odd / "empty.png").write_bytes(b"")
    (root / "labeled" / "dog" / "truncated.jpg").write_bytes(truncated_jpeg(seed))
    for i in range(unlabeled):
        where = root / "unlabeled" / ("batch2/deeper" if i % 2 else "") / f"u{i}.png"
        save_image(where, rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8))
    write_class_folder(root / "test", classes, 2, seed + 1, size=(28, 28))
    return {"labeled": root / "labeled", "unlabeled": root / "unlabeled", "test": root / "test"}
