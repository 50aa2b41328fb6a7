"""Whether mirroring, turning or recolouring an image keeps its class, judged from the user's labelled images.

The weak view flips images horizontally because a mirrored cat is still a cat; a mirrored 2
or a mirrored letter is another symbol (or none), and training on it teaches the network
that the two look alike. Which kind of data a folder holds is not known in advance, so
:func:`mirror_test` asks the labelled images:

1. a quick classifier (ridge regression onto the one-hot classes, on each image's
   standardised ``16 x 16`` pixels: closed form, no iterations, no scikit-learn in the
   training process) is fitted on folds of the labelled images (stratified, up to 5 folds);
2. it scores each held-out image and, paired, the held-out image's mirror image;
3. mirroring **changes the class** when the mirror images score clearly worse, by at least
   :data:`Z_MIN` paired standard errors, *and* keep at most :data:`KEPT_MAX` of the
   accuracy the originals have above chance. On natural images the two score alike (the
   world holds objects facing both ways); on digits a classifier of 100 labelled images
   scored 70-74% on held-out images and 25-39% on their mirror images (z 5.9-7.8).

The strong view's RandAugment turns images by up to :data:`TURN_DEGREES` degrees. That keeps
a digit's class, but a pixel classifier scores turned digits as other classes all the same (it
has seen no turned digit), so :func:`turn_test` asks another question: does a classifier
fitted on the labelled images *and* their copies turned both ways score worse on held-out
originals than one fitted on the originals alone? Insisting that a turn changes nothing costs
accuracy only where it does change the class (arrows of ten directions 36 degrees apart: z
4.1-5.8, keeping at most 0.73 of the accuracy above chance), far less on digits (generated
digits and MNIST at their 28 px: z -0.3 to 1.3; MNIST folders decoded at 32 px: z 2.5-3.3,
keeping 0.81-0.85; ``benchmarks/view_tests.py``). The verdict uses the same thresholds as
mirroring's.

The contrastive view turns the hue by up to :data:`HUE_SHIFT` of the colour circle, and the
views take colour away (grayscale, desaturation) or scramble it (Solarize, Equalize). That keeps
a cat a cat, but where the classes are colours it carries an image to another class.
:func:`colour_test` asks the turn test's question of the hue, with a classifier that also
sees each image's histogram of hues (weighted by how colourful each pixel is): one fitted on
the labelled images and their copies with the hue turned both ways against one fitted on the
originals, with the flip and turn tests' thresholds. Over twelve draws of 100 images
(``benchmarks/view_tests.py``): objects whose class is one of ten hues 0.1 apart keep
0.10-0.40 of the accuracy above chance (z 5.3-8.3: off in all twelve), five hues 0.2 apart
0.52-0.70 (z 2.8-5.6: off in eleven), objects of random colours lose nothing (on in all
twelve). Crops of ten photographs, whose class is which photograph, keep 0.42-0.66 (z
4.5-7.5) and lose their colour changes in all twelve: there the palette is most of what a
quick classifier tells the classes by, and training without colour changes scored no worse
(1.7 points better over three seeds). Grey images are not tested (their colour setting stays
as configured).

A classifier less than :data:`ABOVE_CHANCE_MIN` above chance gives no evidence either way,
and flips, turns and colour changes stay on (the paper's views). The tests take well under a second for 100
images, and at most :data:`MAX_IMAGES` images are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

Z_MIN = 3.0
"""Paired standard errors by which the mirror images must score worse."""
ABOVE_CHANCE_MIN = 0.1
"""Accuracy above chance the classifier must reach on the originals for its verdict to count."""
KEPT_MAX = 0.75
"""Largest share of the above-chance accuracy the transformed images (or the classifier fitted on
them too) may keep when the transformation changes the class."""
TURN_DEGREES = 30.0
"""Largest turn of the strong view (RandAugment's Rotate at magnitude 10), degrees."""
HUE_SHIFT = 0.1
"""Largest hue turn of the contrastive view's colour jitter, a fraction of the colour circle."""
HUE_BINS = 12
"""Bins of the hue histogram the colour test's classifier sees (30 degrees each)."""
HUE_WEIGHT = 4.0
"""Scale of the standardised hue histogram beside the 256 or 768 standardised pixels."""
MAX_IMAGES = 1000
"""Labelled images decoded for the test at most (a stratified sample of larger folders)."""
SIDE = 16
"""Side the quick classifier sees, pixels."""
RIDGE = 0.5
"""Ridge penalty of the quick classifier per feature (features have unit variance per image; on
generated digits penalties from 0.4 to 4 per feature scored alike, 1/256 per feature 10-15 points worse)."""


class _Verdict:
    """The verdict and the start-block line shared by :class:`MirrorEvidence`,
    :class:`TurnEvidence` and :class:`ColourEvidence`: each gives the figures and the three
    endings of its line."""

    accuracy: float
    z: float
    chance: float
    _endings: ClassVar[tuple[str, str, str]]
    """What the line says when the transformation changes the class, when the classifier is too
    near chance to judge, and when it keeps the class."""

    @property
    def transformed(self) -> float:
        """The accuracy set against :attr:`accuracy`."""
        raise NotImplementedError

    def _figures(self) -> str:
        raise NotImplementedError

    @property
    def changes_class(self) -> bool:
        """Whether the transformation changes the class: it scores worse by :data:`Z_MIN`
        standard errors or more and keeps at most :data:`KEPT_MAX` of the above-chance accuracy,
        which is itself at least :data:`ABOVE_CHANCE_MIN` above chance (see the module docstring)."""
        above = self.accuracy - self.chance
        return self.z >= Z_MIN and above >= ABOVE_CHANCE_MIN and (self.transformed - self.chance) <= KEPT_MAX * above

    def describe(self) -> str:
        """One line: the figures and what they mean."""
        changes, near_chance, keeps = self._endings
        if self.changes_class:
            ending = changes
        elif self.accuracy - self.chance < ABOVE_CHANCE_MIN:
            ending = near_chance
        else:
            ending = keeps
        return f"{self._figures()}: {ending}"


@dataclass(frozen=True)
class MirrorEvidence(_Verdict):
    """What the quick classifier of the labelled images found.

    Attributes:
        images: held-out labelled images scored (each once as it is, once mirrored).
        accuracy: share of the held-out images classified right.
        mirrored: share of their mirror images classified right (as the original's class).
        z: the paired difference ``accuracy - mirrored`` in standard errors (0 when none; infinite
            when every pair differs the same way).
        chance: the share of the most common class (what always guessing it scores).
    """

    images: int
    accuracy: float
    mirrored: float
    z: float
    chance: float

    _endings = ("mirroring changes the class, so no flips (views.flip=true flips anyway)",
                "too near chance to judge mirroring, so flips, as for natural images (views.flip=false turns them off)",
                "mirroring keeps the class, so flips (views.flip=false turns them off)")

    @property
    def transformed(self) -> float:
        return self.mirrored

    def _figures(self) -> str:
        return (f"a quick classifier of {self.images} labelled images scores {self.accuracy:.0%} on held-out "
                f"images and {self.mirrored:.0%} on their mirror images (chance {self.chance:.0%})")


class _FittedVerdict(_Verdict):
    """A verdict that sets a classifier fitted on the originals against one fitted on them and
    their transformed copies (:class:`TurnEvidence`, :class:`ColourEvidence`): each says what its
    copies are."""

    images: int

    def _copies(self) -> str:
        raise NotImplementedError

    def _figures(self) -> str:
        return (f"a quick classifier of {self.images} labelled images scores {self.accuracy:.0%} on held-out "
                f"images, {self.transformed:.0%} when also fitted on their copies {self._copies()} "
                f"(chance {self.chance:.0%})")


@dataclass(frozen=True)
class TurnEvidence(_FittedVerdict):
    """What the quick classifiers of the labelled images found about turns.

    Attributes:
        images: held-out labelled images scored (each by both classifiers).
        accuracy: share of them the classifier fitted on the originals classifies right.
        turned: share the classifier fitted on the originals and their turned copies classifies right.
        z: the paired difference ``accuracy - turned`` in standard errors.
        chance: the share of the most common class.
        degrees: the turn, both ways.
    """

    images: int
    accuracy: float
    turned: float
    z: float
    chance: float
    degrees: float = TURN_DEGREES

    _endings = ("turning changes the class, so no rotations (views.rotate=true turns anyway)",
                "too near chance to judge turns, so rotations, as for natural images (views.rotate=false turns them off)",
                "turning keeps the class, so rotations (views.rotate=false turns them off)")

    @property
    def transformed(self) -> float:
        return self.turned

    def _copies(self) -> str:
        return f"turned by {self.degrees:g} degrees"


@dataclass(frozen=True)
class ColourEvidence(_FittedVerdict):
    """What the quick classifiers of the labelled images found about hue turns.

    Attributes:
        images: held-out labelled images scored (each by both classifiers).
        accuracy: share of them the classifier fitted on the originals classifies right.
        shifted: share the classifier fitted on the originals and their copies with the hue
            turned both ways classifies right.
        z: the paired difference ``accuracy - shifted`` in standard errors.
        chance: the share of the most common class.
        shift: the hue turn, both ways, a fraction of the colour circle.
    """

    images: int
    accuracy: float
    shifted: float
    z: float
    chance: float
    shift: float = HUE_SHIFT

    _endings = ("turning the hue changes the class, so no colour changes (views.colour=true changes colours anyway)",
                "too near chance to judge colour, so colour changes, as for natural images "
                "(views.colour=false leaves them out)",
                "turning the hue keeps the class, so colour changes (views.colour=false leaves them out)")

    @property
    def transformed(self) -> float:
        return self.shifted

    def _copies(self) -> str:
        return f"with the hue turned by {self.shift:g} of the colour circle"


def _features(images: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` uint8 -> ``[N, C * SIDE * SIDE + 1]``: each image standardised (brightness and
    contrast removed), and a constant 1 for the classifier's bias."""
    import torch
    import torch.nn.functional as F

    pooled = F.adaptive_avg_pool2d(torch.from_numpy(images).float(), SIDE).flatten(1).numpy()  # [N, C*16*16]
    pooled -= pooled.mean(axis=1, keepdims=True)
    pooled /= pooled.std(axis=1, keepdims=True) + 1e-6
    return np.hstack([pooled, np.ones((len(pooled), 1), dtype=pooled.dtype)])


def mirror_test(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> MirrorEvidence | None:
    """Score held-out labelled images and their mirror images with a quick classifier.

    Args:
        images: ``[N, C, H, W]`` uint8 labelled images.
        labels: ``[N]`` their classes.
        seed: the folds' shuffle.

    Returns:
        The evidence, or None when some class has fewer than 2 images (nothing to hold out)
        or there is a single class.
    """
    labels = np.asarray(labels)
    chance = _chance(labels)
    if chance is None:
        return None
    plain, mirror = _features(images), _features(np.ascontiguousarray(images[..., ::-1]))
    right, right_mirrored = held_out_scores(plain, labels, seed, mirror)
    return MirrorEvidence(len(labels), float(right.mean()), float(right_mirrored.mean()),
                          _paired_z(right - right_mirrored), chance)


def turn_test(images: np.ndarray, labels: np.ndarray, seed: int = 0,
              degrees: float = TURN_DEGREES) -> TurnEvidence | None:
    """Score held-out labelled images with a quick classifier fitted on the other folds' images,
    and with one fitted on those and their copies turned by ``+degrees`` and ``-degrees``.

    Args:
        images: ``[N, C, H, W]`` uint8 labelled images.
        labels: ``[N]`` their classes.
        seed: the folds' shuffle.
        degrees: the turn.

    Returns:
        The evidence, or None when some class has fewer than 2 images or there is a single class.
    """
    import torch
    from torchvision.transforms.v2 import functional as F

    labels = np.asarray(labels)
    chance = _chance(labels)
    if chance is None:
        return None
    batch = torch.from_numpy(np.ascontiguousarray(images))
    turned = [_features(F.rotate(batch, angle).numpy()) for angle in (degrees, -degrees)]
    right, right_turned = held_out_scores_fitted_with(_features(images), labels, seed, *turned)
    return TurnEvidence(len(labels), float(right.mean()), float(right_turned.mean()),
                        _paired_z(right - right_turned), chance, degrees)


def colour_test(images: np.ndarray, labels: np.ndarray, seed: int = 0,
                shift: float = HUE_SHIFT) -> ColourEvidence | None:
    """Score held-out labelled images with a quick classifier of their pixels and hue histogram
    fitted on the other folds' images, and with one fitted on those and their copies with the
    hue turned by ``+shift`` and ``-shift``.

    Args:
        images: ``[N, 3, H, W]`` uint8 labelled images.
        labels: ``[N]`` their classes.
        seed: the folds' shuffle.
        shift: the hue turn, a fraction of the colour circle.

    Returns:
        The evidence, or None for grey images (not 3 channels), when some class has fewer than
        2 images or there is a single class.
    """
    import torch

    from comatch.data.batch_ops import adjust_hue

    labels = np.asarray(labels)
    chance = _chance(labels)
    if chance is None or images.shape[1] != 3:
        return None
    histogram = _hue_histogram(images)
    centre, spread = histogram.mean(axis=0), histogram.std(axis=0) + 1e-6

    def features(batch: np.ndarray, hues: np.ndarray | None = None) -> np.ndarray:
        hues = _hue_histogram(batch) if hues is None else hues
        scaled = HUE_WEIGHT * (hues - centre) / spread  # standardised as the originals'
        return np.hstack([_features(batch)[:, :-1], scaled, np.ones((len(batch), 1), dtype=np.float32)])

    batch = torch.from_numpy(np.ascontiguousarray(images)).float()
    turned = [features(adjust_hue(batch, torch.full((len(batch),), s)).to(torch.uint8).numpy()) for s in (shift, -shift)]
    right, right_shifted = held_out_scores_fitted_with(features(images, histogram), labels, seed, *turned)
    return ColourEvidence(len(labels), float(right.mean()), float(right_shifted.mean()),
                          _paired_z(right - right_shifted), chance, shift)


def _hue_histogram(images: np.ndarray) -> np.ndarray:
    """``[N, 3, H, W]`` uint8 -> ``[N, HUE_BINS]``: each image's histogram of hues, each pixel
    weighted by its chroma (``max - min`` of its channels, so grey pixels count for nothing), as a
    share of the pixels, square-rooted."""
    import torch

    from comatch.data.batch_ops import rgb_to_hsv

    hue, saturation, value = rgb_to_hsv(torch.from_numpy(np.ascontiguousarray(images)).float() / 255)
    bins = (hue * HUE_BINS).long().clamp_(0, HUE_BINS - 1).flatten(1)  # [N, H*W]
    chroma = (saturation * value).flatten(1)
    counts = torch.zeros(len(images), HUE_BINS).scatter_add_(1, bins, chroma) / bins.shape[1]
    return counts.sqrt().numpy()


def _chance(labels: np.ndarray) -> float | None:
    """The share of the most common class, or None when some class has fewer than 2 images
    (nothing to hold out) or there is a single class: no test then."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.min() < 2:
        return None
    return float(counts.max() / counts.sum())


def _paired_z(difference: np.ndarray) -> float:
    """The mean of paired 0/1 differences in standard errors (infinite when every pair differs
    the same way, 0 when none differs)."""
    spread = difference.std(ddof=1) / np.sqrt(len(difference))
    if spread > 0:
        return float(difference.mean() / spread)
    return float(np.sign(difference.mean())) * float("inf") if difference.mean() else 0.0


def held_out_scores(features: np.ndarray, labels: np.ndarray, seed: int, *others: np.ndarray) -> list[np.ndarray]:
    """``[N]`` 0/1 per image: whether the quick classifier, fitted on the other folds of
    ``features`` (stratified, up to 5 folds), classifies it right; then the same for the
    image's row of each of ``others`` (the same images transformed), scored by the same fits."""
    right = [np.zeros(len(labels)) for _ in range(1 + len(others))]
    for train, held in _held_out_folds(labels, seed):
        weights = _ridge(features[train], labels[train])
        for scored, rows in zip(right, (features, *others)):
            scored[held] = np.argmax(rows[held] @ weights, axis=1) == labels[held]
    return right


def held_out_scores_fitted_with(features: np.ndarray, labels: np.ndarray, seed: int,
                                *copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` 0/1 per image, twice: whether the quick classifier fitted on the other folds of
    ``features`` classifies it right, and whether one fitted on those folds' rows of ``features``
    and of each of ``copies`` (the same images transformed) does. Both score ``features``."""
    right, right_fitted = np.zeros(len(labels)), np.zeros(len(labels))
    for train, held in _held_out_folds(labels, seed):
        for scored, extra in ((right, ()), (right_fitted, copies)):
            weights = _ridge(np.vstack([features[train], *(c[train] for c in extra)]),
                             np.tile(labels[train], 1 + len(extra)))
            scored[held] = np.argmax(features[held] @ weights, axis=1) == labels[held]
    return right, right_fitted


def _held_out_folds(labels: np.ndarray, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(train, held)`` masks of each stratified fold (up to 5, fewer when a class has fewer images)."""
    counts = np.bincount(labels)
    fold = stratified_folds(labels, int(min(5, counts[counts > 0].min())), seed)
    for k in range(fold.max() + 1):
        yield fold != k, fold == k


def _ridge(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[F, K]`` weights of a ridge regression of ``features`` onto one-hot ``labels``; solved
    in the dual when there are fewer images than features (the usual case: 100 images, 257 features)."""
    x = features
    targets = np.eye(int(labels.max()) + 1)[labels]
    penalty = RIDGE * x.shape[1]
    if len(x) < x.shape[1]:
        return x.T @ np.linalg.solve(x @ x.T + penalty * np.eye(len(x)), targets)
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ targets)


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """``[N]`` fold of each item: each class's items shuffled and dealt round the folds in turn."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % folds
    return fold


def sample_per_class(labels: Sequence[int], limit: int = MAX_IMAGES, seed: int = 0) -> list[int]:
    """Indices of about ``limit`` items (all when there are no more), the classes in their
    proportions but each with at least 2 where it has them (so that it can be held out)."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    share = limit / len(labels)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picked = [rng.choice(m, min(len(m), max(2, round(share * len(m)))), replace=False) for m in members]
    return sorted(int(i) for i in np.concatenate(picked))


def labelled_sample(paths: Sequence[str], labels: Sequence[int], channels: int, size: int = 32,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """``([N, C, size, size] uint8, [N] labels)``: a sample of at most :data:`MAX_IMAGES` labelled
    image files (:func:`sample_per_class`), decoded at ``size`` px as training decodes them, for
    :func:`mirror_test`, :func:`turn_test` and :func:`colour_test`; unreadable files are left out here (the data
    loading counts and reports them). None when none could be read."""
    from comatch.data.images import UnreadableImage, decode_image

    images, kept = [], []
    for i in sample_per_class(labels, seed=seed):
        try:
            images.append(decode_image(paths[i], size, channels).numpy())
        except UnreadableImage:
            continue
        kept.append(labels[i])
    if not images:
        return None
    return np.stack(images), np.asarray(kept)
