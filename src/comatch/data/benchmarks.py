"""CIFAR-10, CIFAR-100, STL-10 and SVHN, read from the files their publishers distribute.

torchvision's dataset classes do the parsing, with downloading off. Their MD5 checks are
replaced by a check that every file the run needs is present: a missing file is a
:class:`~comatch.errors.UserError` naming the path expected and where the files come from,
and a file that does not parse (truncated, wrong format) is one too.

Layouts under the data root (those torchvision uses):

* ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta)
* ``cifar-100-python/`` (train, test, meta)
* ``stl10_binary/`` (train_X.bin, train_y.bin, unlabeled_X.bin, test_X.bin, test_y.bin)
* SVHN ``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat`` (in the root or ``svhn/``)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torchvision import datasets

from comatch.errors import UserError

T = TypeVar("T")

SOURCES = {
    "cifar10": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted in the data root",
    "cifar100": "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted in the data root",
    "stl10": "stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/, extracted in the data root",
    "svhn": "the *_32x32.mat files from http://ufldl.stanford.edu/housenumbers/ (format 2), placed in the data root",
}


@dataclass
class ArrayData:
    """A benchmark held in memory.

    Attributes:
        images: uint8 ``[N, C, H, W]``: the labelled pool first, then any unlabelled-only images.
        labels: ``[N]``; -1 where the publisher gives no label.
        num_pool: the first ``num_pool`` images are the training pool labels are drawn from.
        test_images, test_labels: the test split.
        class_names: in label order.
        val_images, val_labels: a validation split, where the dataset has one.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_pool: int
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None


def _trusting(cls: type) -> type:
    """``cls`` with its MD5 checks replaced by presence checks done beforehand."""

    class Trusting(cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:  # CIFAR: read the class names without an MD5 check
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as handle:
                self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    Trusting.__name__ = cls.__name__
    return Trusting


def _require(name: str, root: Path, files: list[Path]) -> None:
    """Raise a UserError naming the first missing or empty file of ``files``."""
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist; set --data-root to the folder that holds "
                        f"the {name} files ({SOURCES[name]})")
    for path in files:
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"{name} file {path} is missing; get {SOURCES[name]}")


def _parse(name: str, where: Path, build: Callable[[], T]) -> T:
    """Run a torchvision constructor, turning its failures into one-line UserErrors."""
    try:
        return build()
    except (OSError, ValueError, EOFError, KeyError, IndexError, RuntimeError, pickle.UnpicklingError) as err:
        raise UserError(f"the {name} files in {where} are incomplete or corrupt ({type(err).__name__}: "
                        f"{err}); get them again: {SOURCES[name]}") from err


def _tensor(array: np.ndarray, hwc: bool = False) -> torch.Tensor:
    array = np.ascontiguousarray(array.transpose(0, 3, 1, 2) if hwc else array)
    return torch.from_numpy(array)


def load_cifar(root: Path, hundred: bool) -> ArrayData:
    """CIFAR-10 or CIFAR-100 (fine labels): 50,000 training and 10,000 test images."""
    name, cls = ("cifar100", datasets.CIFAR100) if hundred else ("cifar10", datasets.CIFAR10)
    folder = root / cls.base_folder
    needed = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    _require(name, root, [folder / n for n in needed])
    train = _parse(name, folder, lambda: _trusting(cls)(str(root), train=True, download=False))
    test = _parse(name, folder, lambda: _trusting(cls)(str(root), train=False, download=False))
    return ArrayData(
        _tensor(train.data, hwc=True), torch.as_tensor(train.targets), len(train.targets),
        _tensor(test.data, hwc=True), torch.as_tensor(test.targets), list(train.classes),
    )


def load_stl10(root: Path) -> ArrayData:
    """STL-10: 5,000 labelled training images, then the 100,000 unlabelled ones (label -1)."""
    folder = root / datasets.STL10.base_folder
    _require("stl10", root, [folder / n for n, _ in datasets.STL10.train_list + datasets.STL10.test_list])
    cls = _trusting(datasets.STL10)
    train = _parse("stl10", folder, lambda: cls(str(root), split="train+unlabeled", download=False))
    test = _parse("stl10", folder, lambda: cls(str(root), split="test", download=False))
    num_pool = int((train.labels >= 0).sum())
    names = getattr(train, "classes", None) or [str(c) for c in range(10)]
    return ArrayData(
        _tensor(train.data), torch.as_tensor(train.labels.astype(np.int64)), num_pool,
        _tensor(test.data), torch.as_tensor(test.labels.astype(np.int64)), list(names),
    )


def svhn_folder(root: Path) -> Path:
    """Where the SVHN .mat files are: the data root itself, or its ``svhn/`` folder."""
    nested = root / "svhn"
    return nested if (nested / "train_32x32.mat").is_file() and not (root / "train_32x32.mat").is_file() else root


def load_svhn(root: Path, extra: bool) -> ArrayData:
    """SVHN: 73,257 training and 26,032 test digits; ``extra`` adds 531,131 unlabelled ones.

    The extra images keep their ground truth in ``labels`` (for pseudo-label accuracy only);
    labels are never drawn from them.
    """
    folder = svhn_folder(root)
    splits = ["train", "test"] + (["extra"] if extra else [])
    _require("svhn", root, [folder / datasets.SVHN.split_list[s][1] for s in splits])
    cls = _trusting(datasets.SVHN)
    parts = {s: _parse("svhn", folder, lambda s=s: cls(str(folder), split=s, download=False)) for s in splits}
    pool = [parts["train"]] + ([parts["extra"]] if extra else [])
    images = torch.cat([_tensor(p.data) for p in pool])
    labels = torch.cat([torch.as_tensor(p.labels) for p in pool])
    return ArrayData(
        images, labels, len(parts["train"].labels),
        _tensor(parts["test"].data), torch.as_tensor(parts["test"].labels), [str(d) for d in range(10)],
    )


def load_benchmark(name: str, root: str | Path, extra_unlabeled: bool = False) -> ArrayData:
    """Load benchmark ``name`` (cifar10, cifar100, stl10, svhn) from ``root``.

    Raises:
        UserError: the root or one of the files is missing, or a file does not parse.
    """
    root = Path(root).expanduser().absolute()
    if name in ("cifar10", "cifar100"):
        return load_cifar(root, hundred=name == "cifar100")
    if name == "stl10":
        return load_stl10(root)
    if name == "svhn":
        return load_svhn(root, extra_unlabeled)
    raise ValueError(f"not an in-memory benchmark: {name}")
