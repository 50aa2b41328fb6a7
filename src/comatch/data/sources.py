"""Resolve a run's data: labelled, unlabelled, validation and test datasets.

Every dataset here yields ``(uint8 image [C, S, S], label)`` at the run's image size and
channel count; unlabelled datasets keep their ground truth where it is known (benchmarks, the
rest of a labelled folder), for logging pseudo-label accuracy only, and -1 elsewhere.
In-memory data (digits, CIFAR, STL-10, SVHN) becomes :class:`TensorImages`; files (ImageNet,
the user's folders) become :class:`ImageFiles`, decoded in the loader workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from comatch.data.benchmarks import ArrayData, load_benchmark
from comatch.data.checking import CHECK_SAMPLE
from comatch.data.datasets import TensorImages
from comatch.data.digits import load_digits_split
from comatch.data.extra_labels import KEY_PREFIX, with_extra_labels
from comatch.data.folders import FileList, FolderData, load_imagenet, load_user_folders
from comatch.data.images import ImageFiles, read_failures
from comatch.data.sampling import labels_per_class, read_labelled_list, resolve_labelled_list, select_labelled
from comatch.data.statistics import channel_stats, file_stats, image_properties, to_channels, to_size
from comatch.config import DATASETS
from comatch.errors import UserError



@dataclass
class RunData:
    """The datasets of one run.

    Attributes:
        num_classes: number of classes.
        class_names: their names, in label order.
        labelled: the labelled subset.
        unlabelled: the unlabelled pool (labels are ground truth or -1, never trained on).
        val: the validation part (for tuning), or None.
        test: the test part.
        labelled_ids: which training-pool items were labelled (saved in the run directory):
            indices for in-memory data, paths relative to the labelled folder for files.
        mean, std: per-channel normalisation statistics in [0, 1].
        image_size, channels: what every item has.
        skipped: unreadable files left out before training.
        notes: lines for the run's log (hold-outs, computed settings).
        failure_log: where the file datasets log images that fail during training (see
            :meth:`record_failures`), or None.
        ignored: files and folders scanning skipped: hidden ones, link loops, repeated links
            (:mod:`comatch.data.scan`).
        overlaps: images found in more than one role (:class:`~comatch.data.folders.Overlaps`
            as a dict), or None.
    """

    num_classes: int
    class_names: list[str]
    labelled: Dataset
    unlabelled: Dataset
    val: Dataset | None
    test: Dataset
    labelled_ids: list[int] | list[str] = field(default_factory=list)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    image_size: int = 8
    channels: int = 1
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure_log: Path | None = None
    ignored: list[str] = field(default_factory=list)
    overlaps: dict | None = None
    extra_labels: dict | None = None

    def record_failures(self, log: Path) -> None:
        """Have every file dataset append the images it fails to read during training to ``log``.

        Loader workers cannot hand anything back to the training process, so they append one
        line per failure to this file (see :func:`~comatch.data.images.log_failure`); a resumed
        run keeps the file, so the count covers the whole run. In-memory data never fails.
        """
        self.failure_log = Path(log)
        for dataset in (self.labelled, self.unlabelled, self.val, self.test):
            if isinstance(dataset, ImageFiles):
                dataset.failure_log = self.failure_log

    def vanished(self) -> list[str]:
        """Images that failed to decode during training (and were replaced by others)."""
        before = set(self.skipped)
        return [p for p in read_failures(self.failure_log) if p not in before]

    def all_skipped(self) -> list[str]:
        """Images left out before training, then those that failed during it."""
        return self.skipped + self.vanished()

    def describe(self) -> dict:
        """Sizes and settings, as written to the run directory's ``data.json``."""
        size = lambda d: None if d is None else len(d)  # noqa: E731
        skipped, vanished = self.all_skipped(), self.vanished()
        return {
            "classes": self.class_names, "labelled": size(self.labelled), "unlabelled": size(self.unlabelled),
            "val": size(self.val), "test": size(self.test), "image_size": self.image_size,
            "channels": self.channels, "mean": list(self.mean), "std": list(self.std),
            "skipped_images": len(skipped), "skipped": skipped,
            "failed_during_training": len(vanished), "notes": self.notes,
            "ignored_files": len(self.ignored), "ignored": self.ignored,
            **({"overlaps": self.overlaps} if self.overlaps else {}),
            **({"extra_labels": self.extra_labels} if self.extra_labels is not None else {}),
        }


def _choose_labelled(labels: np.ndarray, class_names: list[str], keys: list[str] | None, *, seed: int,
                     per_class: int | None, num_labels: int | None, labeled_list: str | None) -> np.ndarray:
    """Indices of the labelled subset of a pool; None counts mean 'all' (folders only)."""
    if labeled_list:
        # files labelled through a decisions file come back from it, not from the list
        entries = [e for e in read_labelled_list(labeled_list) if not str(e).startswith(KEY_PREFIX)]
        return resolve_labelled_list(entries, keys, len(labels), Path(labeled_list).name)
    if num_labels is not None:
        per_class = labels_per_class(num_labels, len(class_names))
    if per_class is None:
        if keys is None:
            raise UserError("set data.labels_per_class or data.num_labels (or give --labeled-list FILE)")
        return np.arange(len(labels))
    return select_labelled(labels, per_class, seed, class_names)


Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _stats(mean: list[float] | None, std: list[float] | None, channels: int, compute: Callable[[], Stats]) -> Stats:
    """The configured statistics, checked against ``channels``, else ``compute()``."""
    if mean is None or std is None:
        computed = compute()
        mean, std = mean or computed[0], std or computed[1]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise UserError(f"data.{name} has {len(values)} values but the images have {channels} channels")
    return tuple(mean), tuple(std)


def _unlabelled_rest(total: int, ids: np.ndarray) -> list[int]:
    """Indices ``0..total-1`` that are not labelled (``ids``), in order.

    Raises:
        UserError: If every image is labelled.
    """
    rest = np.setdiff1d(np.arange(total), ids).tolist()
    if not rest:
        raise UserError("every image is labelled, so an unlabelled pool without them is empty; set "
                        "data.unlabeled_includes_labeled=true or label fewer images")
    return rest


def _from_arrays(data: ArrayData, *, seed: int, image_size: int | None, channels: int | None,
                 mean: list[float] | None, std: list[float] | None, include_labelled: bool = True,
                 **choose: Any) -> RunData:
    """RunData of an in-memory dataset, converted once to the run's size and channels.

    ``include_labelled``: whether the unlabelled pool keeps the labelled images.
    """
    size, ch = image_size or data.images.shape[-1], channels or data.images.shape[1]
    convert = lambda x: to_size(to_channels(x, ch), size)  # noqa: E731
    images = convert(data.images)
    ids = _choose_labelled(data.labels[: data.num_pool].numpy(), data.class_names, None, seed=seed, **choose)
    pool = TensorImages(images, data.labels)
    val = None if data.val_images is None or not len(data.val_images) else \
        TensorImages(convert(data.val_images), data.val_labels)
    stats = _stats(mean, std, ch, lambda: channel_stats(images))
    return RunData(
        num_classes=len(data.class_names), class_names=data.class_names,
        labelled=Subset(pool, ids.tolist()),
        unlabelled=pool if include_labelled else Subset(pool, _unlabelled_rest(len(images), ids)), val=val,
        test=TensorImages(convert(data.test_images), data.test_labels), labelled_ids=ids.tolist(),
        mean=stats[0], std=stats[1], image_size=size, channels=ch,
    )


def _from_files(data: FolderData, *, seed: int, image_size: int | None, channels: int | None,
                mean: list[float] | None, std: list[float] | None, strict: bool, include_labelled: bool = True,
                extra_labels: str | None = None, **choose: Any) -> RunData:
    """RunData of image files, decoded per item at the run's size and channels.

    ``include_labelled``: whether the unlabelled pool keeps the labelled images.
    ``extra_labels``: a decisions file (:mod:`comatch.data.extra_labels`): its labelled files
    join the labelled set (always, outside any draw), its excluded ones leave the pool.
    """
    decided = FileList()
    if extra_labels:
        data, decided, counts = with_extra_labels(data, extra_labels, include_labelled)
    train = data.pool + data.extra
    notes = list(data.notes)
    if image_size is None or channels is None:
        auto_size, auto_channels = image_properties(train.paths, train.checks)
        image_size, channels = image_size or auto_size, channels or auto_channels
        notes.append(f"image size {image_size} px and {channels} channel(s), from the data "
                     f"(set data.image_size / data.channels to choose)")
    ids = _choose_labelled(np.asarray(data.pool.labels), data.class_names, data.pool.keys, seed=seed, **choose)
    if extra_labels:
        notes.append(counts.note())
    if not data.extra.paths and len(ids) == len(data.pool.paths):
        if data.overlaps is not None and data.overlaps.dropped:
            raise UserError("the unlabelled folder holds only copies of labelled or test images, so there is no "
                            "unlabelled data; give an --unlabeled folder of other images, or hold labels back "
                            "with --num-labels N or --labels-per-class N")
        raise UserError("every labelled image is labelled and there is no unlabelled data; give "
                        "--unlabeled DIR, or hold labels back with --num-labels N or --labels-per-class N")
    files = lambda f: ImageFiles(f.paths, f.labels, image_size, channels, strict=strict)  # noqa: E731
    if data.skipped:
        notes.append(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]} "
                     f"(all listed in data.json)")
    stats = _stats(mean, std, channels, lambda: file_stats(train.paths, image_size, channels))
    unlabelled = train if include_labelled else \
        data.pool.take(np.setdiff1d(np.arange(len(data.pool.paths)), ids).tolist()) + data.extra
    return RunData(
        num_classes=len(data.class_names), class_names=data.class_names,
        labelled=files(data.pool.take(ids) + decided), unlabelled=files(unlabelled),
        val=files(data.val) if data.val else None, test=files(data.test or FileList()),
        labelled_ids=[data.pool.keys[i] for i in ids] + decided.keys, mean=stats[0], std=stats[1],
        image_size=image_size, channels=channels, skipped=data.skipped, notes=notes, ignored=data.ignored,
        overlaps=data.overlaps.describe() if data.overlaps and data.overlaps.counts else None,
        extra_labels=counts.describe() if extra_labels else None,
    )


def build_data(
    dataset: str,
    *,
    seed: int,
    labels_per_class: int | None,
    num_labels: int | None = None,
    val_per_class: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    root: str = "data",
    labeled: str | None = None,
    unlabeled: str | None = None,
    val: str | None = None,
    test: str | None = None,
    labeled_list: str | None = None,
    extra_labels: str | None = None,
    holdout_fraction: float = 0.2,
    strict: bool = False,
    check_images: bool = True,
    check_sample: int | None = CHECK_SAMPLE,
    extra_unlabeled: bool = False,
    unlabeled_includes_labeled: bool = True,
) -> RunData:
    """Load ``dataset`` and draw the run's labelled subset with ``seed``.

    Args:
        dataset: one of :data:`DATASETS`.
        seed: the run's seed (labelled subset).
        labels_per_class, num_labels: labelled images per class, or in total (balanced).
        val_per_class: digits only: training images per class held out for tuning.
        image_size, channels, mean, std: None: from the data.
        root: folder of the benchmark files.
        labeled, unlabeled, val, test: the user's folders (dataset ``folder``).
        labeled_list: file naming the labelled subset (overrides the counts).
        extra_labels: folders: a decisions file of ``comatch label`` (``labels.csv``).
        holdout_fraction: share of each labelled class held out as the test set when ``test``
            is None (folders).
        strict: stop at the first unreadable image instead of skipping it.
        check_images: decode every file once up front.
        check_sample: folders: an unlabelled folder with more files than this is decoded on a
            sample of this many, the rest as training reads them (:mod:`comatch.data.checking`);
            None: all up front.
        extra_unlabeled: SVHN: add the extra split to the unlabelled data.
        unlabeled_includes_labeled: keep the labelled images in the unlabelled pool (False: the
            released CoMatch code's pools, which leave them out).

    Raises:
        UserError: unknown dataset, missing or corrupt files, or an impossible label request.
    """
    choose = dict(per_class=labels_per_class, num_labels=num_labels, labeled_list=labeled_list)
    common = dict(seed=seed, image_size=image_size, channels=channels, mean=mean, std=std,
                  include_labelled=unlabeled_includes_labeled, **choose)
    if dataset == "folder":
        if not labeled:
            raise UserError("dataset 'folder' needs a labelled folder: --labeled DIR (one sub-folder per class)")
        folders = load_user_folders(labeled, unlabeled, val, test, holdout_fraction=holdout_fraction,
                                    strict=strict, check=check_images, check_sample=check_sample)
        return _from_files(folders, strict=strict, extra_labels=extra_labels, **common)
    if extra_labels:
        raise UserError(f"data.extra_labels is for your own folders (dataset 'folder'), not {dataset!r}; for a "
                        "benchmark give the labelled indices with --labeled-list")
    if dataset == "imagenet":
        return _from_files(load_imagenet(root, strict=strict, check=check_images), strict=strict, **common)
    if dataset == "digits":
        split = load_digits_split(val_per_class)
        arrays = ArrayData(split.train_images, split.train_labels, len(split.train_labels),
                           split.test_images, split.test_labels, [str(d) for d in range(10)],
                           split.val_images, split.val_labels)
        return _from_arrays(arrays, **common)
    if dataset in DATASETS:
        return _from_arrays(load_benchmark(dataset, root, extra_unlabeled), **common)
    raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "RunData", "build_data", "channel_stats"]
