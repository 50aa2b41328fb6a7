"""Large folders: the unlabelled pool decoded on a fixed sample before training and the rest as
training reads it, every unreadable file counted either way; copies of labelled and test images
found by size, then bytes, wherever they are; the scan's order."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from comatch import config as cfg
from comatch.data import build_data
from comatch.data.folders import load_user_folders, scan_images
from comatch.data.images import ImageFiles, decode_image, read_failures
from comatch.data.preprocessing import run_data
from comatch.data.scan import find_images
from comatch.data.statistics import sample_indices
from comatch.errors import UserError
from datafiles import save_image, write_class_folder


def image_folder(root: Path, n: int, bad: set[int] = frozenset(), side: int = 12, seed: int = 7,
                 suffix: str = ".png") -> list[str]:
    """``root/u000.png`` ... (sorted as numbered): random RGB images, those at ``bad`` bytes that are no image."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"u{i:03d}{suffix}"
        if i in bad:
            path.write_bytes(b"not an image %d" % i)
        else:
            save_image(path, rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def folders(tmp_path: Path, **kw):
    """build_data of ``tmp_path``'s L (labelled), U (unlabelled) and T (test) folders."""
    return build_data("folder", seed=0, labels_per_class=None, labeled=str(tmp_path / "L"),
                      unlabeled=str(tmp_path / "U"), test=str(tmp_path / "T"), **kw)


def labelled_and_test(tmp_path: Path, suffix: str = ".png") -> None:
    write_class_folder(tmp_path / "L", ["a", "b"], 2, size=(12, 12), suffix=suffix)
    write_class_folder(tmp_path / "T", ["a", "b"], 1, size=(12, 12), seed=1, suffix=suffix)


def sample_and_rest(n: int, k: int) -> tuple[list[int], list[int]]:
    """The indices of the fixed check sample of ``k`` of ``n`` files, and the others."""
    sampled = sample_indices(n, k).tolist()
    return sampled, [i for i in range(n) if i not in sampled]


def test_a_large_unlabelled_folder_is_decoded_on_a_sample_and_every_failure_counted(tmp_path):
    labelled_and_test(tmp_path)
    sampled, rest = sample_and_rest(60, 20)
    bad = {sampled[3], rest[0], rest[17]}  # 1 of the 20 sampled (5%: at the limit, kept), 2 elsewhere
    paths = image_folder(tmp_path / "U", 60, bad)
    data = folders(tmp_path, check_sample=20)
    assert data.skipped == [paths[sampled[3]]]  # found before training
    assert len(data.unlabelled) == 4 + 59  # the others stay in the pool until training reads them
    assert data.image_size == 12 and data.channels == 3  # from the files, as in a fully checked folder
    note = [n for n in data.notes if "before training (a fixed random sample" in n]
    assert len(note) == 1 and "20 of the 60 unlabelled images" in note[0] and "1 unreadable" in note[0], data.notes
    data.record_failures(tmp_path / "failed.log")
    for i in range(len(data.unlabelled)):
        image, label = data.unlabelled[i]
        assert image.shape == (3, 12, 12)
    assert data.vanished() == [paths[rest[0]], paths[rest[17]]]
    described = data.describe()
    assert described["skipped_images"] == 3 and described["failed_during_training"] == 2
    assert sorted(described["skipped"]) == sorted(paths[i] for i in bad)


def test_a_small_folder_is_decoded_whole_before_training(tmp_path):
    labelled_and_test(tmp_path)
    paths = image_folder(tmp_path / "U", 20, {4, 11})
    data = folders(tmp_path, check_sample=20)
    assert sorted(data.skipped) == [paths[4], paths[11]] and len(data.unlabelled) == 4 + 18
    assert not any("before training (a fixed random sample" in n for n in data.notes), data.notes


def test_a_sample_with_too_many_unreadable_files_stops_before_training_in_one_line(tmp_path):
    labelled_and_test(tmp_path)
    sampled, _ = sample_and_rest(60, 20)
    image_folder(tmp_path / "U", 60, {sampled[0], sampled[9]})  # 2 of 20: 10%
    with pytest.raises(UserError, match=r"2 of 20 sampled images of the unlabelled folder .* cannot be read "
                                        r"\(10%\), e.g. .*u0\d\d.png") as caught:
        folders(tmp_path, check_sample=20)
    assert "\n" not in str(caught.value) and "data.check_sample=null" in str(caught.value)


def test_strict_decodes_every_file_of_a_large_folder_first(tmp_path):
    labelled_and_test(tmp_path)
    _, rest = sample_and_rest(60, 20)
    image_folder(tmp_path / "U", 60, {rest[5]})
    with pytest.raises(UserError, match=rf"cannot read image .*u{rest[5]:03d}.png"):
        folders(tmp_path, check_sample=20, strict=True)


def test_copies_of_labelled_and_test_images_are_found_outside_the_sample(tmp_path):
    labelled_and_test(tmp_path, suffix=".bmp")  # every 12x12 BMP has the same size: all are hashed
    image_folder(tmp_path / "U", 30, seed=5, suffix=".bmp")
    copies = sorted((tmp_path / "L").rglob("*.bmp"))[:2] + sorted((tmp_path / "T").rglob("*.bmp"))[:2]
    for i, path in enumerate(copies):
        shutil.copy(path, tmp_path / "U" / f"v{i}.bmp")  # indices 30..33 of 34
    sampled, _ = sample_and_rest(34, 5)
    assert len({30, 31, 32, 33} - set(sampled)) >= 3  # most copies are outside the sample
    data = folders(tmp_path, check_sample=5, image_size=12, channels=3)
    assert data.overlaps["counts"] == {"labelled+unlabelled": 2, "unlabelled+test": 2}
    assert sorted(Path(p).name for p in data.overlaps["left_out_of_unlabelled"]) == ["v0.bmp", "v1.bmp", "v2.bmp", "v3.bmp"]
    assert len(data.unlabelled) == 4 + 30 and not any(Path(p).name.startswith("v") for p in data.unlabelled.paths)


def test_only_files_sized_like_a_labelled_or_test_file_are_read_outside_the_sample(tmp_path):
    labelled_and_test(tmp_path, suffix=".bmp")
    image_folder(tmp_path / "U", 30, side=20, seed=5, suffix=".bmp")  # 20 px BMPs: no 12 px file's size
    image_folder(tmp_path / "U" / "w", 6, side=12, seed=6, suffix=".bmp")  # 12 px: each shares a size, not bytes
    found = load_user_folders(str(tmp_path / "L"), str(tmp_path / "U"), None, str(tmp_path / "T"),
                              holdout_fraction=0.2, strict=False, check=True, check_sample=5)
    sampled, rest = sample_and_rest(36, 5)
    read = [i for i, c in enumerate(found.extra.checks) if c.digest]
    assert read == sorted(set(sampled) | {i for i in rest if "/w/" in found.extra.paths[i]})
    assert found.overlaps is not None and found.overlaps.counts == {}


def test_the_check_sample_is_a_setting(tmp_path):
    labelled_and_test(tmp_path)
    sampled, rest = sample_and_rest(30, 10)
    image_folder(tmp_path / "U", 30, {rest[0]})
    config = cfg.build_config(preset="folder", overrides=[
        f"data.labeled={tmp_path / 'L'}", f"data.unlabeled={tmp_path / 'U'}", f"data.test={tmp_path / 'T'}",
        "data.check_sample=10", "data.image_size=12"])
    assert cfg.build_config(preset="folder").data.check_sample == 20000
    assert run_data(config).skipped == []
    config.data.check_sample = None  # every file
    assert [Path(p).name for p in run_data(config).skipped] == [f"u{rest[0]:03d}.png"]


def test_a_run_of_unreadable_files_is_stepped_over_and_each_logged(tmp_path):
    paths = image_folder(tmp_path / "U", 64, set(range(20, 52)), side=8)  # 32 in a row: a damaged sub-folder
    dataset = ImageFiles(paths, [-1] * 64, 8, 3)
    dataset.failure_log = tmp_path / "failed.log"
    image, _ = dataset[20]  # tries 20, 24, ..., 48 (every 64 // 16 = 4th file), then 52
    assert torch.equal(image, decode_image(paths[52], 8, 3))
    assert read_failures(dataset.failure_log) == [paths[i] for i in range(20, 52, 4)]


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
