"""What is an image file: the one rule every command uses to find images in a folder.

Training (labelled, unlabelled, validation and test folders), ``comatch evaluate --test``,
``comatch predict``, ``suggest`` and ``baseline`` all find their files here:

* an image is a file whose name ends in one of :data:`IMAGE_EXTENSIONS` (any case); animated
  GIF, WebP and PNG files are read as their first frame;
* hidden files and folders (names starting with ``.``: ``.DS_Store``, macOS ``._x.png``,
  ``.ipynb_checkpoints``) and macOS ``__MACOSX`` folders are skipped and counted;
* symbolic links are followed once: a file or folder reached twice (by its resolved path) is
  read once, and a link to a folder above it (a loop) is not followed; both are counted.

Nothing here reads an image's pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
"""File endings (any case) of image files found in folders; files named explicitly are always tried."""
METADATA_FOLDERS = frozenset({"__MACOSX"})
"""Folder names skipped like hidden ones (what macOS adds to zip files)."""


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (``.x``) or macOS metadata (``__MACOSX``)."""
    return name.startswith(".") or name in METADATA_FOLDERS


def is_image_name(name: str) -> bool:
    """Whether a file name ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class Scan:
    """What scanning found.

    Attributes:
        files: image files (paths as found under the root, not resolved).
        hidden: hidden files and folders skipped (a hidden folder counts once, its content is not looked at).
        loops: links to a folder above them, not followed.
        repeats: links reaching a file or folder that was found already, read once.
        special: pipes, sockets and devices with an image's name (never read: reading could block).
        unlisted: folders that could not be listed (no permission).
    """

    files: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ignored(self) -> list[str]:
        """Everything skipped: hidden, loops, repeats, special files, then unlisted folders."""
        return self.hidden + self.loops + self.repeats + self.special + self.unlisted

    def extend(self, other: "Scan") -> None:
        """Add ``other``'s findings to this one's."""
        self.files += other.files
        self.hidden += other.hidden
        self.loops += other.loops
        self.repeats += other.repeats
        self.special += other.special
        self.unlisted += other.unlisted

    def summary(self) -> str:
        """``'2 hidden file(s) or folder(s), 1 link loop'`` ('' when nothing was skipped)."""
        parts = [(len(self.hidden), "hidden file(s) or folder(s)"), (len(self.loops), "link loop(s) not followed"),
                 (len(self.repeats), "link(s) to images or folders found already (read once)"),
                 (len(self.special), "pipe(s), socket(s) or device(s) named like images"),
                 (len(self.unlisted), "folder(s) that could not be listed")]
        return ", ".join(f"{n} {what}" for n, what in parts if n)


def _inside(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` is ``folder`` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _regular_or_broken(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a regular file (links followed) or a broken link (met as unreadable)."""
    try:
        return entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))
    except OSError:
        return True  # cannot tell: checking it will say why it cannot be read


class Walker:
    """Walks folders, following each symbolic link once, across every folder it is given.

    One walker per role (say, a labelled folder's classes) makes a file reached from two
    folders of that role one image. Folders in :attr:`reserved` (the class folders) belong
    to their own walk: a link from one class into another's folder is a repeat, so an image
    keeps the class of the folder it is in.
    """

    def __init__(self) -> None:
        self.seen_dirs: set[str] = set()
        self.seen_files: set[str] = set()
        self.reserved: set[str] = set()
        self.current = ""
        self.scan = Scan()

    def _elsewhere(self, real: str) -> bool:
        """Whether the resolved ``real`` lies in a reserved folder other than the one being walked."""
        return any(_inside(real, r) for r in self.reserved if r != self.current)

    def enter(self, folder: str, ancestors: tuple[str, ...] = ()) -> str | None:
        """The resolved path of ``folder`` if it is to be walked, else None: a link to a folder
        that holds one of ``ancestors`` (a loop) or to one walked already or reserved for
        another walk (a repeat), counted."""
        real = os.path.realpath(folder)
        if any(_inside(a, real) for a in ancestors):
            self.scan.loops.append(folder)
            return None
        if real in self.seen_dirs or self._elsewhere(real):
            self.scan.repeats.append(folder)
            return None
        self.seen_dirs.add(real)
        return real

    def walk(self, root: str, ancestors: tuple[str, ...] = (), own: bool = False) -> list[tuple[str, str]]:
        """``(folder, name)`` of every image file under ``root`` (which must pass :meth:`enter`);
        ``own``: ``root`` is a reserved folder, walked for itself."""
        if own:
            self.current = os.path.realpath(root)
        real = self.enter(root, ancestors)
        if real is None:
            return []
        found: list[tuple[str, str]] = []
        inside = os.path.join(real, "")  # a file in it that is no link resolves to inside + name
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            self.scan.unlisted.append(root)  # no permission, or gone: nothing in it is found
            return []
        for entry in entries:
            if is_hidden(entry.name):
                self.scan.hidden.append(entry.path)
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                found += self.walk(entry.path, (*ancestors, real))
            elif is_image_name(entry.name):
                if not _regular_or_broken(entry):  # a pipe, socket or device: reading it could block
                    self.scan.special.append(entry.path)
                    continue
                target = os.path.realpath(entry.path) if entry.is_symlink() else inside + entry.name
                if target in self.seen_files or (self.reserved and self._elsewhere(target)):
                    self.scan.repeats.append(entry.path)
                    continue
                self.seen_files.add(target)
                found.append((root, entry.name))
        return found


def walk_images(root: str | Path, walker: Walker | None = None, above: tuple[str, ...] = ()) -> list[str]:
    """Image files under ``root`` at any depth, in ``os.walk`` order (folders sorted by path,
    then file names sorted): the order torchvision's ImageFolder lists a class's files in.

    Args:
        root: the folder.
        walker: a walker shared with other folders of the same role (a new one by default).
        above: resolved folders above ``root`` that a link inside it must not lead back to.

    Returns:
        The paths, ``os.path.join(folder, name)``; what was skipped is in ``walker.scan``.
    """
    walker = walker or Walker()
    found = sorted(walker.walk(str(root), above, own=os.path.realpath(root) in walker.reserved))  # by (folder, name): sorted(os.walk(...)), then sorted names
    files = [os.path.join(folder, name) for folder, name in found]
    walker.scan.files += files
    return files


def find_images(root: str | Path) -> Scan:
    """Image files under ``root`` at any depth, sorted as paths (``sorted(Path(...))``: by their
    parts, so ``a/b.png`` comes before ``a-b/c.png``), and what was skipped.

    The paths are written as :class:`~pathlib.Path` writes them (``./U/x.png`` as ``U/x.png``);
    each folder is parsed once, not each file (a million files take seconds, not minutes).
    """
    walker = Walker()
    folders: dict[str, tuple[str, tuple[str, ...]]] = {}  # as found -> (as Path writes it, with a separator; its parts)
    found = []
    for folder, name in walker.walk(str(root)):
        if folder not in folders:
            clean = Path(folder)
            folders[folder] = ("" if str(clean) == "." else os.path.join(str(clean), ""), clean.parts)
        found.append((folders[folder], name))
    found.sort(key=lambda item: (*item[0][1], item[1]))
    walker.scan.files = [prefix + name for (prefix, _), name in found]
    return walker.scan


def class_folders(root: str | Path, walker: Walker) -> list[tuple[str, str]]:
    """``(name, path)`` of the class sub-folders of ``root``, sorted by name.

    Hidden folders, links to ``root`` or a folder above it (loops), and links to a folder
    that another class has already (repeats) are not classes; they are counted in
    ``walker.scan``.
    """
    top = os.path.realpath(root)
    classes, taken = [], set()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        try:
            if not entry.is_dir():  # follows links
                continue
        except OSError:
            continue
        real = os.path.realpath(entry.path)
        if is_hidden(entry.name):
            walker.scan.hidden.append(entry.path)
        elif _inside(top, real):
            walker.scan.loops.append(entry.path)
        elif real in taken:
            walker.scan.repeats.append(entry.path)
        else:
            taken.add(real)
            classes.append((entry.name, entry.path))
    walker.reserved |= taken
    return classes
