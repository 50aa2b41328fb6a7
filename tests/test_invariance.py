"""Whether mirroring, a turn or a hue turn keeps the class: the labelled images decide the flips, turns and colour
changes of a folder run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from comatch.data.invariance import (
    ColourEvidence,
    MirrorEvidence,
    TurnEvidence,
    colour_test,
    labelled_sample,
    mirror_test,
    sample_per_class,
    turn_test,
)
from comatch.training.defaults import Situation, choose_defaults

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from kinds import arrows  # noqa: E402  (the arrows the benchmarks measure)


def _pointing(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright wedge opening to the right; class 1: the same opening to the left (a
    mirror image of class 0), at random heights and with noise: mirroring swaps the classes."""
    images, labels = np.zeros((n, 1, 24, 24), dtype=np.uint8), np.arange(n) % 2
    for i, label in enumerate(labels):
        top = rng.integers(2, 10)
        for r in range(12):
            width = 2 + r if r < 6 else 14 - r
            start = rng.integers(0, 3)
            images[i, 0, top + r, start:start + width] = 200
        if label == 1:
            images[i] = images[i][..., ::-1]
        images[i, 0] = np.clip(images[i, 0] + rng.normal(0, 20, (24, 24)), 0, 255).astype(np.uint8)
    return images, labels


def _up_down(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a blob in the upper half, class 1: in the lower half, anywhere across (its left
    and right positions mirror each other): mirroring keeps the class."""
    images, labels = np.zeros((n, 1, 24, 24), dtype=np.uint8), np.arange(n) % 2
    for i, label in enumerate(labels):
        row, col = rng.integers(1, 8) + 12 * label, rng.integers(0, 20)
        images[i, 0, row:row + 4, col:col + 4] = 220
        images[i, 0] = np.clip(images[i, 0] + rng.normal(0, 20, (24, 24)), 0, 255).astype(np.uint8)
    return images, labels


def _squares(rng: np.random.Generator, n: int, hue_of_class: bool) -> tuple[np.ndarray, np.ndarray]:
    """A square of random size, place, saturation and brightness on a dark noisy grey background. With
    ``hue_of_class``, ten classes, the square's hue (0.1 of the circle apart); without, two classes,
    the square in the upper or the lower half, its hue random."""
    import colorsys

    classes = 10 if hue_of_class else 2
    images, labels = np.zeros((n, 3, 24, 24), dtype=np.uint8), np.arange(n) % classes
    for i, label in enumerate(labels):
        image = np.full((24, 24, 3), rng.uniform(20, 60)) + rng.normal(0, 12, (24, 24, 3))
        hue = label / 10 if hue_of_class else rng.random()
        side = int(rng.integers(5, 10))
        row = int(rng.integers(0, 24 - side)) if hue_of_class else int(rng.integers(0, 12 - side)) + 12 * label
        col = int(rng.integers(0, 24 - side))
        image[row:row + side, col:col + side] = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1),
                                                                                   rng.uniform(0.6, 1)))
        images[i] = np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return images, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hue_turn_changes_the_class_when_the_class_is_the_hue(seed):
    """Ten hues 0.1 apart: a classifier made to ignore turns of 0.1 confuses neighbours."""
    found = colour_test(*_squares(np.random.default_rng(seed), 100, hue_of_class=True), seed=seed)
    assert found.images == 100 and found.accuracy >= 0.6 and found.shifted <= found.accuracy - 0.2
    assert found.z >= 3 and found.changes_class
    assert "turning the hue changes the class, so no colour changes" in found.describe()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hue_turn_keeps_the_class_when_colours_are_random(seed):
    found = colour_test(*_squares(np.random.default_rng(seed), 60, hue_of_class=False), seed=seed)
    assert found.accuracy >= 0.8 and abs(found.accuracy - found.shifted) <= 0.05
    assert not found.changes_class and "turning the hue keeps the class, so colour changes" in found.describe()


def test_grey_images_have_no_colour_test():
    images, labels = _up_down(np.random.default_rng(0), 20)
    assert colour_test(images, labels) is None
    images, labels = _squares(np.random.default_rng(0), 5, hue_of_class=True)
    assert colour_test(images, labels) is None  # one image per class: nothing to hold out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_turn_changes_the_class_of_arrows_ten_directions_apart(seed):
    """36 degrees between classes: a classifier made to ignore 30 degree turns confuses neighbours."""
    found = turn_test(*arrows(np.random.default_rng(seed), 100, 10), seed=seed)
    assert found.images == 100 and found.accuracy >= 0.7 and found.turned <= found.accuracy - 0.15
    assert found.z >= 3 and found.changes_class
    assert "turning changes the class, so no rotations" in found.describe()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_turn_keeps_the_class_of_arrows_four_directions_apart(seed):
    """90 degrees between classes: a 30 degree turn leaves an arrow pointing the same way."""
    found = turn_test(*arrows(np.random.default_rng(seed), 100, 4), seed=seed)
    assert found.accuracy >= 0.9 and abs(found.accuracy - found.turned) <= 0.05
    assert not found.changes_class and "turning keeps the class, so rotations" in found.describe()


def test_a_turn_keeps_the_class_of_mirror_image_wedges():
    """The wedges that mirroring swaps keep their class under a 30 degree turn: each test asks its own question."""
    images, labels = _pointing(np.random.default_rng(0), 60)
    assert mirror_test(images, labels).changes_class and not turn_test(images, labels).changes_class


def test_mirror_images_of_a_chiral_class_score_as_the_other_class():
    images, labels = _pointing(np.random.default_rng(0), 60)
    found = mirror_test(images, labels)
    assert found.images == 60 and found.accuracy >= 0.9 and found.mirrored <= 0.2
    assert found.z >= 3 and found.changes_class
    assert "mirroring changes the class, so no flips" in found.describe()


def test_mirror_images_of_symmetric_classes_score_as_the_originals():
    images, labels = _up_down(np.random.default_rng(0), 60)
    found = mirror_test(images, labels)
    assert found.accuracy >= 0.9 and abs(found.accuracy - found.mirrored) <= 0.05
    assert not found.changes_class and "mirroring keeps the class, so flips" in found.describe()


def test_a_classifier_at_chance_is_no_evidence_against_flips():
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (60, 1, 24, 24), dtype=np.uint8), np.arange(60) % 3
    found = mirror_test(images, labels)
    assert found.chance == pytest.approx(1 / 3) and not found.changes_class
    assert "too near chance to judge mirroring, so flips" in found.describe()


def test_too_few_images_per_class_leave_the_question_open():
    images, labels = _pointing(np.random.default_rng(0), 5)
    assert mirror_test(images, np.array([0, 0, 0, 0, 1])) is None  # one image of class 1: nothing to hold out
    assert mirror_test(images, np.zeros(5, dtype=int)) is None      # one class
    assert turn_test(images, np.array([0, 0, 0, 0, 1])) is None and turn_test(images, np.zeros(5, dtype=int)) is None


@pytest.mark.parametrize("field, key, evidence, value", [
    ("mirror", "views.flip", MirrorEvidence(100, 0.72, 0.36, 5.9, 0.1), False),  # generated digits (own_folder.py)
    ("mirror", "views.flip", MirrorEvidence(100, 0.40, 0.38, 0.6, 0.1), True),   # natural-image-like: both score alike
    ("mirror", "views.flip", MirrorEvidence(100, 0.12, 0.05, 3.1, 0.1), True),   # a classifier at chance: no evidence
    ("mirror", "views.flip", MirrorEvidence(100, 0.80, 0.70, 3.5, 0.1), True),   # worse, but mirror images keep 6/7
    ("turn", "views.rotate", TurnEvidence(100, 0.82, 0.57, 4.6, 0.1), False),   # arrows of ten directions (view_tests.py)
    ("turn", "views.rotate", TurnEvidence(100, 0.74, 0.71, 0.7, 0.1), True),    # generated digits
    ("turn", "views.rotate", TurnEvidence(100, 0.15, 0.05, 3.2, 0.1), True),    # a classifier near chance: no evidence
    ("colour", "views.colour", ColourEvidence(100, 0.63, 0.23, 7.3, 0.1), False),  # objects coded by hue (view_tests.py)
    ("colour", "views.colour", ColourEvidence(100, 0.18, 0.18, 0.0, 0.1), True),   # objects of random colours
    ("colour", "views.colour", ColourEvidence(100, 0.54, 0.43, 2.95, 0.1), True),  # photographs: below z 3
])
def test_the_evidence_sets_the_view_defaults(field, key, evidence, value):
    situation = Situation(device="cpu", cpu_cores=2, image_size=28, channels=3, num_labelled=100,
                          num_unlabelled=1000, iterations=100, **{field: evidence})
    chosen = choose_defaults(situation)
    assert chosen.overrides[key] is value
    assert any(r.startswith(f"{key}={value}: a quick classifier of 100 labelled images") for r in chosen.reasons)
    kept = choose_defaults(situation, {key: not value})
    assert key not in kept.overrides and f"{key}={not value}: your setting" in kept.reasons


def test_untested_views_stay_on():
    chosen = choose_defaults(Situation(device="cpu", cpu_cores=2, image_size=28, channels=1, num_labelled=6,
                                       num_unlabelled=20, iterations=100))
    assert chosen.overrides["views.flip"] is True and chosen.overrides["views.rotate"] is True
    assert ("views.flip=True: mirroring not tested (fewer than 2 labelled images in some class): flips, as for "
            "natural images") in chosen.reasons
    assert ("views.rotate=True: turns not tested (fewer than 2 labelled images in some class): rotations, as for "
            "natural images") in chosen.reasons
    assert "views.colour" not in chosen.overrides  # grey images: colour as configured
    chosen = choose_defaults(Situation(device="cpu", cpu_cores=2, image_size=28, channels=3, num_labelled=6,
                                       num_unlabelled=20, iterations=100))
    assert chosen.overrides["views.colour"] is True
    assert ("views.colour=True: colour not tested (fewer than 2 labelled images in some class): colour changes, "
            "as for natural images") in chosen.reasons
    for files, explicit in ((1, {"data.channels": 3}), (3, {"data.channels": 1})):  # grey files or a grey network
        chosen = choose_defaults(Situation(device="cpu", cpu_cores=2, image_size=28, channels=files, num_labelled=6,
                                           num_unlabelled=20, iterations=100), explicit)
        assert "views.colour" not in chosen.overrides and not any("colour" in r for r in chosen.reasons)


def test_sampling_keeps_every_class_and_the_proportions():
    labels = [0] * 900 + [1] * 100 + [2] * 3
    picked = sample_per_class(labels, limit=100)
    counts = np.bincount(np.asarray(labels)[picked])
    assert counts.tolist() == [90, 10, 2] and picked == sorted(set(picked))
    assert sample_per_class([0, 1, 1], limit=100) == [0, 1, 2]
    assert np.bincount(np.asarray(labels + [3])[sample_per_class(labels + [3], limit=100)]).tolist() == [90, 10, 2, 1]


def test_a_folder_of_mirror_image_classes_trains_without_flips(tmp_path, capsys):
    """`comatch train --labeled` decides the flips (and turns) from the files, prints why, and keeps the
    user's choice (without running the test)."""
    import yaml

    from datafiles import save_image

    from comatch.cli import main

    images, labels = _pointing(np.random.default_rng(0), 40)
    for i, (image, label) in enumerate(zip(images, labels)):
        save_image(tmp_path / "lab" / ("right", "left")[label] / f"{i}.png", image[0], mode="L")
        save_image(tmp_path / "unl" / f"{i}.png", image[0], mode="L")
    common = ["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "unl"), "--show-config",
              "run.device=cpu"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("preset:"):])["views"]["flip"] is False
    assert "defaults: views.flip=False: a quick classifier of 40 labelled images" in out
    assert yaml.safe_load(out[out.index("preset:"):])["views"]["rotate"] is True
    assert main([*common, "views.flip=true"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("preset:"):])["views"]["flip"] is True
    assert "defaults: views.flip=True: your setting" in out and "mirror images" not in out
    assert "defaults: views.rotate=True: a quick classifier of 40 labelled images" in out
    assert main([*common, "views.flip=true", "views.rotate=false"]) == 0  # nothing left to test: no test runs
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("preset:"):])["views"]["rotate"] is False
    assert "defaults: views.rotate=False: your setting" in out and "quick classifier" not in out


def test_a_folder_of_hue_coded_classes_trains_without_colour_changes(tmp_path, capsys):
    """Colour images get the colour test as well: classes told apart by their hue train without
    colour changes (and so without grayscale), and the user's setting skips the test."""
    import yaml

    from datafiles import save_image

    from comatch.cli import main

    images, labels = _squares(np.random.default_rng(0), 60, hue_of_class=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        save_image(tmp_path / "lab" / f"hue{label}" / f"{i}.png", image.transpose(1, 2, 0))
        save_image(tmp_path / "unl" / f"{i}.png", image.transpose(1, 2, 0))
    common = ["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "unl"), "--show-config",
              "run.device=cpu"]
    assert main(common) == 0
    out = capsys.readouterr().out
    views = yaml.safe_load(out[out.index("preset:"):])["views"]
    assert views["colour"] is False and views["grayscale_prob"] == 0
    assert "defaults: views.colour=False: a quick classifier of 60 labelled images" in out
    assert "turning the hue changes the class, so no colour changes" in out
    assert main([*common, "views.colour=true"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("preset:"):])["views"]["colour"] is True
    assert "defaults: views.colour=True: your setting" in out and "hue turned" not in out


def test_unreadable_labelled_files_are_left_out_of_the_test(tmp_path):
    from datafiles import save_image

    images, labels = _pointing(np.random.default_rng(0), 20)
    paths = []
    for i, image in enumerate(images):
        save_image(tmp_path / f"{i}.png", image[0], mode="L")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "0.png").write_bytes(b"not an image")
    images, kept = labelled_sample(paths, labels.tolist(), channels=1)
    assert images.shape == (19, 1, 32, 32) and kept.tolist() == labels[1:].tolist()
    assert mirror_test(images, kept).changes_class
    (tmp_path / "1.png").write_bytes(b"")
    for path in paths[2:]:
        (tmp_path / path).unlink()
    assert labelled_sample(paths, labels.tolist(), channels=1) is None
