"""Folders of image files: the user's own data and ImageNet-style class folders.

Labelled, validation and test folders use torchvision's ImageFolder layout (one sub-folder per
class). Unlabelled folders may hold images at any depth; class sub-folders there are ignored.
Every file is checked once up front (:func:`~comatch.data.images.check_files`), so the
datasets hold only readable files; unreadable ones are listed as skipped, or stop the run
when ``strict``. An unlabelled folder of more than ``check_sample`` files is checked on a
sample, the rest as training reads them (:mod:`comatch.data.checking`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from comatch.data.checking import CHECK_SAMPLE, check_sampled, sample_note
from comatch.data.images import GRAY_MODES, FileCheck, check_files, holds_gray_only, unreadable_error
from comatch.data.sampling import holdout_per_class
from comatch.data.scan import IMAGE_EXTENSIONS, Scan, Walker, class_folders, find_images, walk_images
from comatch.errors import UserError

IMAGENET_SOURCE = ("ILSVRC2012 from https://image-net.org/, with train/ and val/ each holding "
                   "one sub-folder per class (wnid)")


@dataclass
class FileList:
    """Image files with labels (-1 where unknown), relative keys and what checking found."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    checks: list[FileCheck] = field(default_factory=list)

    def take(self, index: np.ndarray | list[int]) -> "FileList":
        """The files at ``index``."""
        pick = lambda items: [items[i] for i in index] if items else []  # noqa: E731
        return FileList(pick(self.paths), pick(self.labels), pick(self.keys), pick(self.checks))

    def __add__(self, other: "FileList") -> "FileList":
        return FileList(self.paths + other.paths, self.labels + other.labels,
                        self.keys + other.keys, self.checks + other.checks)


@dataclass
class FolderData:
    """The file lists of a folder-based run.

    Attributes:
        class_names: in label order.
        pool: the labelled candidates (labelled folder less any hold-out).
        extra: unlabelled-only files (label -1, or ground truth where known).
        val, test: evaluation files, or None.
        skipped: unreadable files that were left out.
        notes: lines for the run's log.
        ignored: hidden files and folders, link loops and repeated links that scanning skipped.
        overlaps: images found in more than one role.
    """

    class_names: list[str]
    pool: FileList
    extra: FileList
    val: FileList | None
    test: FileList | None
    skipped: list[str]
    notes: list[str]
    ignored: list[str] = field(default_factory=list)
    overlaps: "Overlaps | None" = None


def _existing_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder. Raises UserError if it is missing or a file."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} folder {folder} is a file, not a folder; give the folder that holds the images")
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} does not exist; check the path")
    return folder


def _warnings(labeled: str, test: str | None, class_names: list[str]) -> list[str]:
    """Notes for settings that run but measure nothing useful."""
    notes = []
    if len(class_names) == 1:
        notes.append(f"warning: the labelled folder {labeled} has a single class ({class_names[0]!r}): every "
                     f"prediction is that class and the accuracy means nothing; add one sub-folder per class")
    if test and Path(test).expanduser().resolve() == Path(labeled).expanduser().resolve():
        notes.append(f"warning: the test folder is the labelled folder {labeled}: the test accuracy is "
                     f"measured on training images and overstates the model; give a separate --test folder")
    return notes


def scan_class_folder(path: str | Path, what: str,
                      class_names: list[str] | None = None) -> tuple[list[str], FileList, Scan]:
    """Classes and files of an ImageFolder-layout folder, found by the one rule of :mod:`comatch.data.scan`.

    Files are in torchvision ImageFolder's order (classes sorted, then ``os.walk`` order);
    hidden folders and links back to the folder (loops) are never classes.

    Args:
        path: the folder, one sub-folder per class.
        what: its role in messages ("labelled", "test", ...).
        class_names: the run's classes; labels follow their order (a folder may lack some).

    Returns:
        ``(class names, files, what was skipped)``.

    Raises:
        UserError: the folder is missing, has no class sub-folders, a class sub-folder holds
            no images, or (with ``class_names``) a class the run does not know.
    """
    root = _existing_dir(path, what)
    walker = Walker()
    folders = class_folders(root, walker)
    if not folders:
        raise UserError(f"{what} folder {root} has no class sub-folders; put each class's images in "
                        f"its own sub-folder ({root}/CLASS/IMAGE.png)")
    found = {name: walk_images(folder, walker, (os.path.realpath(root),)) for name, folder in folders}
    for name, files in found.items():
        if not files:
            raise UserError(f"class folder {root / name} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    names = class_names or list(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise UserError(f"{what} folder {root} has class {unknown[0]!r}, which the labelled data "
                        f"lacks; its classes are: {', '.join(names)}")
    index = {name: i for i, name in enumerate(names)}
    result = FileList()
    for name, files in found.items():
        result.paths += files
        result.labels += [index[name]] * len(files)
        result.keys += relative_keys(files, root)
    return names, result, walker.scan


def scan_images(path: str | Path, what: str) -> tuple[FileList, Scan]:
    """Every image file under ``path`` at any depth (label -1), sorted by path, and what was skipped."""
    root = _existing_dir(path, what)
    scan = find_images(root)
    if not scan.files:
        raise UserError(f"{what} folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the path")
    return FileList(list(scan.files), [-1] * len(scan.files), relative_keys(scan.files, root)), scan


def relative_keys(paths: list[str], root: Path) -> list[str]:
    """Each of ``paths`` (found under ``root``) as ``Path(path).relative_to(root).as_posix()``,
    working out each folder once rather than each file."""
    folders: dict[str, str] = {}
    keys = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in folders:
            relative = Path(folder).relative_to(root).as_posix()
            folders[folder] = "" if relative == "." else relative + "/"
        keys.append(folders[folder] + name)
    return keys


def _ignored_note(scan: Scan, what: str) -> list[str]:
    """One note for what scanning a folder skipped ([] when nothing was)."""
    if not scan.ignored:
        return []
    return [f"{what} folder: skipped {scan.summary()}, e.g. {scan.ignored[0]} (all listed in data.json, 'ignored')"]


def keep_readable(files: FileList, skipped: list[str], *, strict: bool, check: bool) -> FileList:
    """``files`` less those that do not decode (added to ``skipped``).

    Raises:
        UserError: with ``strict``, at the first unreadable file.
    """
    files.checks = check_files(files.paths) if check else []
    if not check:
        return files
    return _drop_unreadable(files, skipped, strict)


def _drop_unreadable(files: FileList, skipped: list[str], strict: bool) -> FileList:
    """``files`` less those their checks found unreadable (added to ``skipped``).

    Raises:
        UserError: with ``strict``, at the first unreadable file.
    """
    bad = [i for i, c in enumerate(files.checks) if not c.ok]
    if bad and strict:
        raise unreadable_error(files.paths[bad[0]], files.checks[bad[0]].error)
    skipped.extend(files.paths[i] for i in bad)
    return files.take([i for i, c in enumerate(files.checks) if c.ok]) if bad else files


def keep_readable_unlabelled(files: FileList, skipped: list[str], others: list[FileList], *, strict: bool,
                             check: bool, sample: int | None, folder: str) -> tuple[FileList, str | None]:
    """The unlabelled ``files`` less those found unreadable (added to ``skipped``), and a note
    for the run's log when they were checked on a sample.

    A folder of at most ``sample`` files is checked whole (:func:`keep_readable`), and so is
    any folder when ``sample`` is None or with ``strict`` (which promises that no unreadable
    file is met after training starts). A larger one is checked on a sample, the rest as
    training reads them (:func:`~comatch.data.checking.check_sampled`); ``others``, the
    labelled, validation and test files (checked already), say which sizes a copy could have.

    Raises:
        UserError: with ``strict``, at the first unreadable file; or most of the sample unreadable.
    """
    if not check or strict or sample is None or len(files.paths) <= sample:
        return keep_readable(files, skipped, strict=strict, check=check), None
    files.checks = check_sampled(files.paths, {c.size for other in others for c in other.checks}, sample, folder)
    return _drop_unreadable(files, skipped, strict), sample_note(files.checks, sample)


def _check_classes(files: FileList, class_names: list[str], what: str, root: str) -> None:
    """Raise if some class has no readable file left."""
    counts = np.bincount(files.labels, minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts) if n == 0]
    if empty:
        raise UserError(f"class {empty[0]!r} of the {what} folder {root} has no readable image "
                        f"left; add readable images to {Path(root) / empty[0]}")


def identities(files: FileList) -> list[str | None]:
    """What makes two files the same image: the hash of their bytes where the check read them;
    None for a file it did not read (outside the sample of a large folder, of a size no file of
    another role has: none has its bytes); their resolved paths when nothing was checked."""
    if files.checks:
        return [c.digest or (os.path.realpath(p) if c.decoded else None) for p, c in zip(files.paths, files.checks)]
    return [os.path.realpath(p) for p in files.paths]


@dataclass
class Overlaps:
    """Images (same bytes, or the same file) found in more than one role.

    Attributes:
        counts: ``"labelled+test"``-style pair -> number of distinct images they share.
        dropped: unlabelled files left out of the training pool: copies of test images
            (never trained on) and of labelled images (counted once).
        examples: one shared file per pair.
    """

    counts: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        """As written to ``data.json``."""
        return {"counts": self.counts, "left_out_of_unlabelled": self.dropped, "examples": self.examples}

    def warning(self) -> str | None:
        """The one warning line, or None without overlaps."""
        if not self.counts:
            return None
        pairs = ", ".join(f"{pair.replace('+', ' and ')} {n}" for pair, n in self.counts.items())
        left = (f"; the {len(self.dropped)} unlabelled copies of labelled or test images are left out of the "
                f"unlabelled pool" if self.dropped else "")
        return (f"warning: the same image is in more than one role (same bytes): {pairs}{left}; all "
                f"listed in data.json ('overlaps'): give each image one role")


def find_overlaps(roles: dict[str, FileList]) -> Overlaps:
    """The images shared by the ``roles`` (name -> files), each counted once per pair of roles."""
    ids = {role: identities(files) for role, files in roles.items()}
    first = {role: {} for role in roles}
    for role, files in roles.items():
        for key, path in zip(ids[role], files.paths):
            if key is not None:
                first[role].setdefault(key, path)
    result = Overlaps()
    names = list(roles)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = first[a].keys() & first[b].keys()
            if shared:
                result.counts[f"{a}+{b}"] = len(shared)
                result.examples[f"{a}+{b}"] = first[b][min(shared, key=lambda k: first[b][k])]
    return result


def _without_copies(extra: FileList, of: list[FileList], overlaps: Overlaps) -> FileList:
    """``extra`` less the files that are also in ``of`` (recorded in ``overlaps.dropped``)."""
    taken = {key for files in of for key in identities(files)} - {None}
    keep = [i for i, key in enumerate(identities(extra)) if key not in taken]
    if len(keep) == len(extra.paths):
        return extra
    kept = set(keep)
    overlaps.dropped += [p for i, p in enumerate(extra.paths) if i not in kept]
    return extra.take(keep)


def load_user_folders(labeled: str, unlabeled: str | None, val: str | None, test: str | None, *,
                      holdout_fraction: float, strict: bool, check: bool,
                      check_sample: int | None = CHECK_SAMPLE) -> FolderData:
    """The user's own folders (see the module docstring).

    Without ``test``, a stratified ``holdout_fraction`` of each labelled class (a fixed draw,
    the same for every seed) becomes the test set and is never trained on.

    An image found in more than one role (the same bytes when the files are checked, else the
    same file) is named in one warning; the unlabelled folder's copies of labelled and test
    images are left out of the unlabelled pool (test images are never trained on; labelled
    ones are in the pool once). The unlabelled folder is checked last, knowing the other
    folders' files (:func:`keep_readable_unlabelled`, ``check_sample``).
    """
    skipped: dict[str, list[str]] = {"labelled": [], "unlabelled": [], "validation": [], "test": []}
    names, pool, scan = scan_class_folder(labeled, "labelled")
    notes = _warnings(labeled, test, names) + _ignored_note(scan, "labelled")
    ignored = list(scan.ignored)
    pool = keep_readable(pool, skipped["labelled"], strict=strict, check=check)
    _check_classes(pool, names, "labelled", labeled)
    extra = FileList()
    if unlabeled:
        extra, scan = scan_images(unlabeled, "unlabelled")
        notes += _ignored_note(scan, "unlabelled")
        ignored += scan.ignored
    evaluation = {}
    for what, path in (("validation", val), ("test", test)):
        evaluation[what] = None
        if path:
            _, files, scan = scan_class_folder(path, what, names)
            notes += _ignored_note(scan, what)
            ignored += scan.ignored
            evaluation[what] = keep_readable(files, skipped[what], strict=strict, check=check)
            if not evaluation[what].paths:
                raise UserError(f"{what} folder {path} has no readable image")
    if unlabeled:
        others = [pool] + [files for files in evaluation.values() if files is not None]
        extra, note = keep_readable_unlabelled(extra, skipped["unlabelled"], others, strict=strict, check=check,
                                               sample=check_sample, folder=unlabeled)
        notes += [note] if note else []
    roles = {"labelled": pool, "unlabelled": extra, "validation": evaluation["validation"],
             "test": evaluation["test"]}
    overlaps = find_overlaps({k: v for k, v in roles.items() if v is not None and v.paths})
    if overlaps.counts:
        extra = _without_copies(extra, [f for f in (pool, evaluation["test"]) if f is not None], overlaps)
        notes.append(overlaps.warning())
    if evaluation["test"] is None:
        keep, held = holdout_per_class(np.asarray(pool.labels), holdout_fraction)
        if len(held) == 0:
            raise UserError(f"no --test folder, and the labelled folder {labeled} is too small to hold "
                            f"out a test set; give a test folder with --test DIR")
        evaluation["test"], pool = pool.take(held), pool.take(keep)
        notes.append(f"no test folder given: {len(held)} labelled images ({holdout_fraction:.0%} of each "
                     f"class, the same for every seed) are held out as the test set and never trained on")
    return FolderData(names, pool, extra, evaluation["validation"], evaluation["test"],
                      [path for role in skipped.values() for path in role], notes, ignored, overlaps)


def load_imagenet(root: str | Path, *, strict: bool, check: bool) -> FolderData:
    """ImageNet-style data: ``ROOT/train/CLASS/*`` and ``ROOT/val/CLASS/*`` (or ``ROOT/imagenet/...``).

    The ``val`` split is the test set, as in the paper.
    """
    base = Path(root).expanduser().absolute()
    if not (base / "train").is_dir() and (base / "imagenet" / "train").is_dir():
        base = base / "imagenet"
    if not base.is_dir():
        raise UserError(f"data root {base} does not exist; set --data-root to the folder holding "
                        f"train/ and val/ ({IMAGENET_SOURCE})")
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise UserError(f"ImageNet folder {base / split} is missing; get {IMAGENET_SOURCE}")
    skipped: list[str] = []
    names, pool, train_scan = scan_class_folder(base / "train", "ImageNet train")
    pool = keep_readable(pool, skipped, strict=strict, check=check)
    _check_classes(pool, names, "ImageNet train", str(base / "train"))
    _, test, val_scan = scan_class_folder(base / "val", "ImageNet val", names)
    test = keep_readable(test, skipped, strict=strict, check=check)
    notes = _ignored_note(train_scan, "ImageNet train") + _ignored_note(val_scan, "ImageNet val")
    overlaps = find_overlaps({"labelled": pool, "test": test})
    notes += [overlaps.warning()] if overlaps.counts else []
    return FolderData(names, pool, FileList(), None, test, skipped, notes,
                      train_scan.ignored + val_scan.ignored, overlaps)


@dataclass(frozen=True)
class FolderProbe:
    """What a quick look at the user's folders finds (for choosing settings before loading).

    Attributes:
        image_size: median shorter side of a sample of the files, pixels.
        channels: 1 if every sampled file is grayscale (in its pixels, whatever its mode), else 3.
        stored_as_rgb: the sampled files are grayscale, some of them stored as colour images.
        num_labelled, num_unlabelled: files in the labelled and unlabelled folders.
        num_classes: class sub-folders of the labelled folder.
        labelled: the labelled folder's files and their classes (not checked).
    """

    image_size: int
    channels: int
    num_labelled: int
    num_unlabelled: int
    num_classes: int
    labelled: FileList = field(default_factory=FileList)
    stored_as_rgb: bool = False


GRAY_CONTENT_SAMPLE = 16
"""Sampled colour-mode files decoded to see whether they hold greys only."""


def probe_folders(labeled: str, unlabeled: str | None, sample: int = 64) -> FolderProbe:
    """Count the files and read the headers of an evenly spaced sample (and, where some are
    colour images, the pixels of up to :data:`GRAY_CONTENT_SAMPLE` of those: greys stored as RGB).

    Raises:
        UserError: a folder is missing or holds no images.
    """
    from PIL import Image

    classes, labelled, _ = scan_class_folder(labeled, "labelled")
    unlabelled = scan_images(unlabeled, "unlabelled")[0] if unlabeled else FileList()
    paths = labelled.paths + unlabelled.paths
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(sample, len(paths))).astype(int)]
    sides, coloured = [], []
    for path in picked:
        try:
            with Image.open(path) as image:  # the header only: no decoding
                sides.append(min(image.size))
                if image.mode not in GRAY_MODES:
                    coloured.append(path)
        except OSError:
            continue  # unreadable files are met (and counted) when the data is loaded
    size = int(np.median(sides)) if sides else 32
    spaced = [coloured[i] for i in np.linspace(0, len(coloured) - 1, min(GRAY_CONTENT_SAMPLE, len(coloured))).astype(int)]
    stored_as_rgb = bool(sides and coloured and all(holds_gray_only(path) for path in spaced))
    channels = 1 if sides and (not coloured or stored_as_rgb) else 3
    return FolderProbe(size, channels, len(labelled.paths), len(unlabelled.paths), len(classes), labelled, stored_as_rgb)
