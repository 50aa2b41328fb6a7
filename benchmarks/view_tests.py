"""How the quick classifiers of the labelled images decide colour and rotation, and the questions tried before.

**Colour.** ``data/invariance.py``'s ``colour_test`` (``test``): a ridge classifier of each image's
16 x 16 standardised pixels and its hue histogram (12 bins, each pixel weighted by its chroma),
fitted on folds of 100 labelled images (10 per class), against one fitted on those and their
copies with the hue turned by +0.1 and -0.1 of the circle (the contrastive view's largest hue
jitter), both scoring held-out originals. Beside it, three questions tried before, on a
classifier of the pixels and a 4 x 4 opponent-colour histogram (too coarse to see a small
object's hue):

* **luminance**: a second classifier fitted on the images' luminance alone (colour-blind),
  against the colour classifier, on the same held-out images;
* **hue shift**: the held-out images with their hue turned by +-0.1, against the images as they are;
* **fitted**: ``colour_test``'s question on that classifier, the copies also turned grey.

For each, the paired difference in standard errors (``z``) and the share of the accuracy
above chance that the colour-blind or hue-shifted images keep (``kept``); the tests call an
operation class-changing at ``z >= 3`` and ``kept <= 0.75``. Four kinds of labelled images:

* ``coded``: the drawn objects of ``object_scenes`` on photographs, any shape, the class their
  body's hue (ten hues 0.1 apart): colour *is* the class (the ``coded`` folder kind);
* ``coarse``: the same with five hues 0.2 apart (20 images per class): colour is the class,
  and a turn of 0.1 takes a body half the way to its neighbour's;
* ``photos``: the labelled crops of the ``photos`` folder kind (ten colour photographs, the
  class the photograph): the palette tells the classes apart, though a human would know a crop
  turned grey;
* ``objects``: the ``objects`` kind (random body colours): colour says nothing.

**Rotation.** Turns by +-30 degrees (the strong view's largest rotation), two ways: the flip
test's question (``scored``: the classifier of the originals scores held-out labelled images
against their turned copies) and ``data/invariance.py``'s ``turn_test`` (``fitted``: a classifier
fitted on the labelled images and their turned copies against one fitted on the originals,
both scoring held-out originals). On ``digits`` and ``mnist`` (``kinds.py``) and arrows of 4
directions, whose class a 30 degree turn keeps, and arrows of 10 and 8 directions (36 and 45
degrees apart), whose class it changes or nearly does.

    python benchmarks/view_tests.py --seeds 0 1 2      # about a minute on 2 cores
    python benchmarks/view_tests.py --folders          # the verdicts on the own-folder benchmarks' folders
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

import kinds
import object_scenes
from comatch.data import invariance

HUE_SHIFT = 0.1


def coded(seed: int, per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = [object_scenes.scene(int(rng.integers(10)), "labeled", rng, body_hue=c / 10) for c in labels]
    return np.stack(images).transpose(0, 3, 1, 2), labels


def photos(seed: int, per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(kinds.PHOTOS)), per_class)
    return kinds.photo_crops(labels, "labeled", rng).transpose(0, 3, 1, 2), labels


def coarse(seed: int, per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(5), per_class)
    images = [object_scenes.scene(int(rng.integers(10)), "labeled", rng, body_hue=c / 5) for c in labels]
    return np.stack(images).transpose(0, 3, 1, 2), labels


def objects(seed: int, per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    return np.stack([object_scenes.scene(int(c), "labeled", rng) for c in labels]).transpose(0, 3, 1, 2), labels


KINDS = {"coded": coded, "coarse": coarse, "photos": photos, "objects": objects}


def chroma(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """``[N, bins * bins]``: each image's histogram of two opponent colours (red-green,
    yellow-blue), square-rooted and standardised per image."""
    x = images.astype(np.float32) / 255
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    first = np.clip(((r - g) / 2 + 0.5) * bins, 0, bins - 1).astype(int)
    second = np.clip(((r + g - 2 * b) / 4 + 0.5) * bins, 0, bins - 1).astype(int)
    cells = (first * bins + second).reshape(len(x), -1)
    counts = np.sqrt(np.stack([np.bincount(row, minlength=bins * bins) for row in cells]) / cells.shape[1])
    return (counts - counts.mean(1, keepdims=True)) / (counts.std(1, keepdims=True) + 1e-6)


def features(images: np.ndarray) -> np.ndarray:
    return np.hstack([invariance._features(images), chroma(images)])


def luminance(images: np.ndarray) -> np.ndarray:
    y = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    return np.repeat(np.round(y).astype(np.uint8)[:, None], 3, axis=1)


def hue_shifted(images: np.ndarray) -> np.ndarray:
    shifts = np.where(np.arange(len(images)) % 2 == 0, HUE_SHIFT, -HUE_SHIFT)
    batch = torch.from_numpy(images)
    return torch.stack([F.adjust_hue(batch[i], float(shifts[i])) for i in range(len(batch))]).numpy()


def paired(right: np.ndarray, other: np.ndarray, chance: float) -> dict:
    difference = right - other
    z = difference.mean() / (difference.std(ddof=1) / np.sqrt(len(difference)) + 1e-12)
    above = right.mean() - chance
    return {"accuracy": float(right.mean()), "other": float(other.mean()), "z": round(float(z), 2),
            "kept": round(float((other.mean() - chance) / above), 2) if above > 0 else None}


def hue_turned(images: np.ndarray, shift: float) -> np.ndarray:
    batch = torch.from_numpy(images)
    return torch.stack([F.adjust_hue(batch[i], shift) for i in range(len(batch))]).numpy()


def judge(images: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    colour, blind, shifted = features(images), features(luminance(images)), features(hue_shifted(images))
    counts = np.bincount(labels)
    chance = counts.max() / counts.sum()
    right, right_shifted = invariance.held_out_scores(colour, labels, seed, shifted)
    (right_blind,) = invariance.held_out_scores(blind, labels, seed)
    copies = [features(hue_turned(images, HUE_SHIFT)), features(hue_turned(images, -HUE_SHIFT)), blind]
    plain, fitted = invariance.held_out_scores_fitted_with(colour, labels, seed, *copies)
    found = invariance.colour_test(images, labels, seed)
    return {"test": {"accuracy": found.accuracy, "other": found.shifted, "z": round(found.z, 2),
                     "kept": round((found.shifted - chance) / (found.accuracy - chance), 2)
                     if found.accuracy > chance else None, "changes_class": found.changes_class},
            "luminance": paired(right, right_blind, chance), "hue_shift": paired(right, right_shifted, chance),
            "fitted": paired(plain, fitted, chance)}


def rotation(images: np.ndarray, labels: np.ndarray, seed: int, degrees: float = invariance.TURN_DEGREES) -> dict:
    """Two questions about turns by +-``degrees``: ``scored``, the flip test's question (the
    classifier of the originals scores held-out images and their turned copies), and ``fitted``,
    :func:`comatch.data.invariance.turn_test`'s (a classifier fitted on the originals and their
    turned copies against one fitted on the originals, both scoring held-out originals)."""
    angles = np.where(np.arange(len(images)) % 2 == 0, degrees, -degrees)
    batch = torch.from_numpy(np.ascontiguousarray(images))
    turned = torch.stack([F.rotate(batch[i], float(angles[i])) for i in range(len(batch))]).numpy()
    counts = np.bincount(labels)
    chance = counts.max() / counts.sum()
    right, right_turned = invariance.held_out_scores(invariance._features(images), labels, seed,
                                                     invariance._features(turned))
    fitted = invariance.turn_test(images, labels, seed, degrees)
    return {"scored": paired(right, right_turned, chance),
            "fitted": {"accuracy": fitted.accuracy, "other": fitted.turned, "z": round(fitted.z, 2),
                       "kept": round((fitted.turned - chance) / (fitted.accuracy - chance), 2),
                       "changes_class": fitted.changes_class}}


def turn_kinds(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labelled images (100) whose class a 30 degree turn keeps (``digits``, ``mnist``: ``kinds.py``;
    arrows of 4 directions) or may change (arrows of 10 and 8 directions)."""
    found = {}
    for kind in ("digits", "mnist"):
        parts, _ = kinds.KINDS[kind].draw(0 if kind == "digits" else None, 100, 10, seed)
        images, labels = parts["labeled"]
        found[kind] = (images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2), labels)
    for directions in (10, 8, 4):
        found[f"arrows-{directions}"] = kinds.arrows(np.random.default_rng(seed), 100, directions)
    return found


FOLDER_KINDS = (("digits", 0), ("digits", 1), ("digits", 2), ("mnist", 0), ("mnist", 1), ("mnist", 2),
                ("objects", 0), ("objects", 1), ("arrows", 0), ("arrows", 1), ("arrows", 2),
                ("coded", 0), ("coded", 1), ("coded", 2), ("photos", 0), ("photos", 1), ("photos", 2))
"""Labelled folders as ``own_folder.py`` builds them (kind, data seed): those of the own-folder
benchmarks' runs, and other draws of ``mnist`` and ``arrows``."""


def folder_verdicts(kind: str, seed: int, root: Path) -> dict:
    """What ``comatch train --labeled`` decides for the labelled folder ``own_folder.py`` builds
    for ``kind`` and ``seed``: the same files, scanned, sampled and decoded as the command does,
    with training seed 0."""
    from comatch.data.folders import probe_folders

    parts, _ = kinds.KINDS[kind].draw(kinds.KINDS[kind].unlabelled, kinds.KINDS[kind].test, 10, seed)
    classes = kinds.KINDS[kind].classes
    images, labels = parts["labeled"]
    for image, c, k in zip(images, labels, kinds._rank_in_class(labels)):
        kinds.save_image(image, root / classes[c] / f"{classes[c]}_{k}.png")
    probe = probe_folders(str(root), None)
    sample = invariance.labelled_sample(probe.labelled.paths, probe.labelled.labels, probe.channels, seed=0)
    mirror, turn = invariance.mirror_test(*sample, seed=0), invariance.turn_test(*sample, seed=0)
    found = {"mirror": {"accuracy": mirror.accuracy, "other": mirror.mirrored, "z": round(mirror.z, 2),
                        "flip": not mirror.changes_class},
             "turn": {"accuracy": turn.accuracy, "other": turn.turned, "z": round(turn.z, 2),
                      "rotate": not turn.changes_class}}
    colour = invariance.colour_test(*sample, seed=0)
    if colour is not None:  # colour images only
        found["colour"] = {"accuracy": colour.accuracy, "other": colour.shifted, "z": round(colour.z, 2),
                           "colour": not colour.changes_class}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--folders", action="store_true",
                        help="instead: the flip, turn and colour verdicts on the own-folder benchmarks' labelled folders")
    args = parser.parse_args()
    result = {}
    if args.folders:
        import tempfile

        for kind, seed in FOLDER_KINDS:
            with tempfile.TemporaryDirectory() as root:
                found = result.setdefault(f"folders-{kind}", {})[seed] = folder_verdicts(kind, seed, Path(root))
            mirror, turn, colour = found["mirror"], found["turn"], found.get("colour")
            print(f"{kind:8s} seed {seed}: mirror {mirror['accuracy']:.0%} -> {mirror['other']:.0%} (z {mirror['z']}) "
                  f"flip={mirror['flip']}; turn {turn['accuracy']:.0%} -> {turn['other']:.0%} (z {turn['z']}) "
                  f"rotate={turn['rotate']}" + (f"; hue {colour['accuracy']:.0%} -> {colour['other']:.0%} "
                                                f"(z {colour['z']}) colour={colour['colour']}" if colour else ""),
                  flush=True)
        args.seeds = []  # the folders only
    for kind, draw in KINDS.items():
        for seed in args.seeds:
            found = result.setdefault(kind, {})[seed] = judge(*draw(seed), seed)
            print(f"{kind:8s} seed {seed}: " + "; ".join(
                f"{test} {f['accuracy']:.0%} -> {f['other']:.0%} (z {f['z']}, kept {f['kept']})"
                for test, f in found.items()) + ("; changes the class" if found["test"]["changes_class"] else ""),
                flush=True)
    for seed in args.seeds:
        for kind, (images, labels) in turn_kinds(seed).items():
            found = result.setdefault(f"rotation-{kind}", {})[seed] = rotation(images, labels, seed)
            print(f"{kind:9s} seed {seed}: rotation " + "; ".join(
                f"{test} {f['accuracy']:.0%} -> {f['other']:.0%} (z {f['z']}, kept {f['kept']})"
                for test, f in found.items()) + ("; changes the class" if found["fitted"]["changes_class"] else ""),
                flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
