"""The user's own image folders: decoding, unreadable files, hold-outs, labelled lists, errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from comatch.cli import main
from comatch.data import build_data
from comatch.data.images import ImageFiles, decode_image
from comatch.errors import UserError
from datafiles import save_image, write_class_folder, write_user_tree

TINY = ["--iterations", "2", "optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2",
        "run.log_every=1", "model.arch=wrn10_1", "data.image_size=32", "run.tensorboard=false"]


def test_decoding_converts_modes_and_cuts_the_centre(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:, :3, 3] = 0  # left half transparent: composited over black
    save_image(tmp_path / "a.png", rgba, mode="RGBA")
    image = decode_image(str(tmp_path / "a.png"), 4, 3)  # 4x6 -> centre 4x4 (columns 1..4)
    assert image.shape == (3, 4, 4) and image.dtype == torch.uint8
    assert image[0, :, 0].tolist() == [0] * 4 and image[0, :, 3].tolist() == [200] * 4
    assert image[1:].max() == 0
    save_image(tmp_path / "g.png", np.full((5, 5), 90, dtype=np.uint8), mode="L")
    assert decode_image(str(tmp_path / "g.png"), 5, 3).unique().tolist() == [90]  # gray -> RGB copies
    save_image(tmp_path / "p.png", np.full((8, 8, 3), (255, 0, 0), dtype=np.uint8), mode="P")
    palette = decode_image(str(tmp_path / "p.png"), 4, 1)  # palette -> luma of red
    assert palette.shape == (1, 4, 4) and abs(int(palette[0, 0, 0]) - 76) <= 1


def test_a_file_that_breaks_after_checking_is_replaced_or_stops_a_strict_run(tmp_path, capsys):
    write_class_folder(tmp_path, ["x"], 2, size=(8, 8))
    good = [str(tmp_path / "x" / "x_0.png"), str(tmp_path / "x" / "x_1.png")]
    (tmp_path / "x" / "x_0.png").write_bytes(b"broken later")
    image, label = ImageFiles(good, [0, 1], 8, 3)[0]
    err = capsys.readouterr().err
    assert err.startswith("comatch: warning: skipping unreadable image") and err.count("\n") == 1
    assert label == 1 and torch.equal(image, decode_image(good[1], 8, 3))  # the next readable file
    with pytest.raises(UserError, match="cannot read image .*x_0.png"):
        ImageFiles(good, [0, 1], 8, 3, strict=True)[0]


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path):
    tree = write_user_tree(tmp_path)
    data = build_data("folder", seed=0, labels_per_class=None, labeled=str(tree["labeled"]),
                      unlabeled=str(tree["unlabeled"]), test=str(tree["test"]), image_size=32, channels=3)
    assert sorted(p.split("/")[-1] for p in data.skipped) == ["empty.png", "truncated.jpg"]
    assert len(data.labelled) == 24 and len(data.unlabelled) == 24 + 8 and len(data.test) == 6
    assert data.class_names == ["cat", "dog", "fox"]
    labels = [data.unlabelled[i][1] for i in range(len(data.unlabelled))]
    assert labels.count(-1) == 8  # ground truth kept for the labelled folder, -1 for the rest
    for i in range(len(data.labelled)):
        image, _ = data.labelled[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_size_channels_and_statistics_come_from_the_data_when_not_given(tmp_path):
    for i, cls in enumerate(["a", "b"] * 3):
        save_image(tmp_path / "lab" / cls / f"{i}.png", np.full((20, 28), 51 * (i % 2) + 51, np.uint8), mode="L")
    data = build_data("folder", seed=0, labels_per_class=1, labeled=str(tmp_path / "lab"), holdout_fraction=0.34)
    assert data.channels == 1 and data.image_size == 20  # median shorter side
    assert data.mean[0] == pytest.approx(((51 + 102) / 2) / 255, abs=1e-6)
    assert any("held out" in note for note in data.notes) and len(data.test) == 2


def test_train_on_user_folders_reports_skipped_images(tmp_path, capsys):
    tree = write_user_tree(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--labeled", str(tree["labeled"]), "--unlabeled", str(tree["unlabeled"]),
            "--val", str(tree["test"]), "--out", str(out)]
    assert main([*args, *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_images"] == 2 and summary["preset"] == "folder" and summary["num_labelled"] == 18
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    log = capsys.readouterr().out
    assert "skipped 2 unreadable image(s)" in log and "held out as the test set" in log
    data = json.loads((out / "data.json").read_text())
    assert data["test"] == 6 and len(data["skipped"]) == 2


def test_strict_stops_at_the_first_unreadable_image(tmp_path, capsys):
    tree = write_user_tree(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--labeled", str(tree["labeled"]), "--unlabeled", str(tree["unlabeled"]),
                 "--strict", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error: cannot read image") and "empty.png" in err and "\n" not in err
    assert not (out / "summary.json").exists()


def test_labelled_subset_is_seeded_saved_as_paths_and_reusable(tmp_path):
    write_class_folder(tmp_path / "lab", ["x", "y"], 6)
    draw = lambda seed: build_data("folder", seed=seed, labels_per_class=2, labeled=str(tmp_path / "lab"),  # noqa: E731
                                   image_size=8, channels=3, mean=[0.5], std=[0.5]).labelled_ids
    assert draw(3) == draw(3) != draw(4) and len(draw(3)) == 4
    assert sorted({p.split("/")[0] for p in draw(3)}) == ["x", "y"] and draw(3)[0].endswith(".png")
    assert main(["train", "--labeled", str(tmp_path / "lab"), "--labels-per-class", "2", "--seed", "4",
                 "--out", str(tmp_path / "c"), *TINY]) == 0
    saved = json.loads((tmp_path / "c" / "labelled.json").read_text())
    assert saved == draw(4)
    assert main(["train", "--labeled", str(tmp_path / "lab"), "--labeled-list", str(tmp_path / "c" / "labelled.json"),
                 "--seed", "3", "--out", str(tmp_path / "d"), *TINY]) == 0
    assert json.loads((tmp_path / "d" / "labelled.json").read_text()) == saved


def _error(capsys, *args: str) -> str:
    assert main(["train", *args, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error:") and "\n" not in err
    return err


def test_empty_class_folder_is_named(tmp_path, capsys):
    write_class_folder(tmp_path / "lab", ["x", "y"], 3)
    (tmp_path / "lab" / "z").mkdir()
    err = _error(capsys, "--labeled", str(tmp_path / "lab"), "--labels-per-class", "1")
    assert f"class folder {tmp_path / 'lab' / 'z'} holds no images" in err


def test_class_left_without_readable_images_is_named(tmp_path, capsys):
    write_class_folder(tmp_path / "lab", ["x", "y"], 3)
    (tmp_path / "lab" / "z").mkdir()
    (tmp_path / "lab" / "z" / "bad.png").write_bytes(b"not an image")
    err = _error(capsys, "--labeled", str(tmp_path / "lab"), "--labels-per-class", "1")
    assert "class 'z'" in err and "no readable image" in err


def test_more_labels_than_a_class_has_is_refused(tmp_path, capsys):
    write_class_folder(tmp_path / "lab", ["x", "y"], 5)
    err = _error(capsys, "--labeled", str(tmp_path / "lab"), "--labels-per-class", "5")
    assert "class 0 ('x') has only 4 images but 5 labels per class" in err  # one of 5 held out for testing


@pytest.mark.parametrize("setup, flags, message", [
    (lambda p: None, ["--labeled", "{p}/missing"], "labelled folder {p}/missing does not exist"),
    (lambda p: write_class_folder(p / "lab", ["x"], 3), ["--labeled", "{p}/lab", "--unlabeled", "{p}/nope"],
     "unlabelled folder {p}/nope does not exist"),
    (lambda p: write_class_folder(p / "lab", ["x", "y"], 3), ["--labeled", "{p}/lab"], "there is no unlabelled data"),
    (lambda p: (p / "lab" / "x").mkdir(parents=True) or Image.new("RGB", (4, 4)).save(p / "lab" / "a.png"),
     ["--labeled", "{p}/lab"], "holds no images"),
    (lambda p: write_class_folder(p / "lab", ["x", "y"], 3), ["--labeled", "{p}/lab", "--num-labels", "3"],
     "cannot be split evenly over 2 classes"),
])
def test_user_mistakes_are_one_line(tmp_path, capsys, setup, flags, message):
    setup(tmp_path)
    err = _error(capsys, *[f.format(p=tmp_path) for f in flags])
    assert message.format(p=tmp_path) in err


def test_test_folder_with_an_unknown_class_is_refused(tmp_path, capsys):
    write_class_folder(tmp_path / "lab", ["x", "y"], 3)
    write_class_folder(tmp_path / "test", ["x", "w"], 1)
    err = _error(capsys, "--labeled", str(tmp_path / "lab"), "--labels-per-class", "1", "--test", str(tmp_path / "test"))
    assert "class 'w'" in err
    shutil.rmtree(tmp_path / "test" / "w")
    assert main(["train", "--labeled", str(tmp_path / "lab"), "--labels-per-class", "1", "--test",
                 str(tmp_path / "test"), "--out", str(tmp_path / "run"), *TINY]) == 0  # a class may be missing


def test_the_report_of_a_run_without_a_validation_part_says_why_no_temperature_was_fitted(tmp_path, capsys):
    """Own folders without --val: calibration fits no temperature (the labelled images were
    trained on), and the end-of-run report must still be written and say so (it failed on the
    missing `fitted_on`)."""
    tree = write_user_tree(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--labeled", str(tree["labeled"]), "--unlabeled", str(tree["unlabeled"]),
                 "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr()
    assert "report failed" not in printed.out + printed.err
    assert json.loads((out / "calibration.json").read_text())["fitted_on"] is None
    page = (out / "report.html").read_text()
    assert "Temperature T = 1, not fitted (no validation part: the labelled images were trained on" in page
    suspicious = page[page.index("<h2>Suspicious unlabelled images</h2>"):]
    assert f"<tr><th>{tree['unlabeled']}" in suspicious  # named by file path, not by row number
    assert "#" not in suspicious.split("<table>")[1].split("</table>")[0]
    classes = page[page.index("<h2>Classes</h2>"):page.index("<h2>Most confident mistakes</h2>")]
    names = json.loads((out / "data.json").read_text())["classes"]
    assert all(f"<tr><th>{name}</th>" in classes for name in names)


@pytest.mark.parametrize("stored", ["PNG", "JPEG"])
def test_grayscale_images_stored_as_rgb_are_read_as_one_channel(tmp_path, stored):
    """Many converters write grayscale images as RGB files: the pixels, not the file's mode,
    decide the channels (a JPEG's R, G and B may differ by a unit or two). A colour image
    among them makes it 3."""
    from comatch.data.folders import probe_folders

    rng = np.random.default_rng(0)
    suffix = ".png" if stored == "PNG" else ".jpg"
    for c in ("a", "b"):
        (tmp_path / "labeled" / c).mkdir(parents=True)
        for i in range(4):
            gray = rng.integers(0, 256, (20, 20), dtype=np.uint8)
            Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB").save(tmp_path / "labeled" / c / f"{i}{suffix}", stored)
    probe = probe_folders(str(tmp_path / "labeled"), None)
    assert probe.channels == 1 and probe.stored_as_rgb
    colour = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(colour, "RGB").save(tmp_path / "labeled" / "b" / f"colour{suffix}", stored)
    probe = probe_folders(str(tmp_path / "labeled"), None)
    assert probe.channels == 3 and not probe.stored_as_rgb
