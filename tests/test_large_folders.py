"""Large folders: the scan's order and cost."""

import os
from pathlib import Path

import numpy as np

from comatch.data.folders import scan_images
from comatch.data.scan import find_images
from datafiles import save_image


# ------------------------------------------------------------------ the scan
NAMES = ["a-b/x.png", "a/b.png", "a/b/c.png", "A/z.png", "a.b/y.png", "top.png"]
PATH_ORDER = ["A/z.png", "a/b/c.png", "a/b.png", "a-b/x.png", "a.b/y.png", "top.png"]
"""sorted(Path(...)) compares the paths' parts ('a' < 'a-b'); as strings, 'a-b/' < 'a/'."""


def test_found_images_are_in_path_order_with_keys_relative_to_the_root(tmp_path, monkeypatch):
    for name in NAMES:
        save_image(tmp_path / "U" / name, np.zeros((4, 4, 3), np.uint8))
    assert find_images(tmp_path / "U").files == [str(tmp_path / "U" / name) for name in PATH_ORDER]
    monkeypatch.chdir(tmp_path)
    files, _ = scan_images("./U/", "unlabelled")
    assert files.paths == [f"U/{name}" for name in PATH_ORDER] and files.keys == PATH_ORDER
    monkeypatch.chdir(tmp_path / "U")
    files, _ = scan_images(".", "unlabelled")
    assert files.paths == PATH_ORDER and files.keys == PATH_ORDER


def test_links_inside_and_outside_the_folder_are_read_once(tmp_path):
    save_image(tmp_path / "U" / "real" / "a.png", np.zeros((4, 4, 3), np.uint8))
    save_image(tmp_path / "E" / "b.png", np.ones((4, 4, 3), np.uint8))
    os.symlink(tmp_path / "U" / "real" / "a.png", tmp_path / "U" / "alias.png")
    os.symlink(tmp_path / "E", tmp_path / "U" / "ext")
    os.symlink(tmp_path / "E" / "b.png", tmp_path / "U" / "ext_b.png")
    os.symlink(tmp_path / "U" / "real", tmp_path / "U" / "link")
    scan = find_images(tmp_path / "U")
    assert scan.files == [str(tmp_path / "U" / "alias.png"), str(tmp_path / "U" / "ext" / "b.png")]
    assert sorted(Path(p).relative_to(tmp_path / "U").as_posix() for p in scan.repeats) == ["ext_b.png", "link/a.png", "real"]
