"""The ``objects`` kind of :mod:`kinds`: one drawn object on a crop of a real photograph, 32x32 RGB.

Ten silhouettes (:data:`SHAPES`), each a few polygons and strokes in a unit box, facing right.
One image: a class's silhouette, mirrored with probability 0.5 (so a horizontal flip keeps the
class while the orientation varies), rotated by up to +-20 deg, scaled to 60-95% of the image
side and placed at random; painted in a random colour that is brighter or darker than the
background behind it (by 0.3-0.7 of the range, as a photographed object stands out), with its
details in a second random colour, and shaded by a linear light gradient in a random
direction; composited (drawn at 4x and reduced, so the edges are anti-aliased) onto a random
crop of one of eleven photographs scikit-image ships in its wheel (side 24-160 photograph
pixels, log-uniform, mirrored with p 0.5, out of focus by a Gaussian blur of sd 0-1.5 image px,
brightness scaled 0.7-1.2); then degraded: Gaussian blur (sd 0-0.6 px), pixel noise (sd 2-8
of 255) and JPEG compression (quality 40-90).

Backgrounds never cross parts: each photograph is cut, left to right, into a band for the
labelled images (the first 15% of its width), one for the unlabelled (the next 60%) and one for
the test images (the last 25%), and a part's crops lie inside its own band, so no test image
shares background pixels with a training image and no labelled with an unlabelled one.

The photographs (``skimage.data``, their licences as its docstrings give them): astronaut,
rocket and hubble_deep_field (NASA and SpaceX photographs in the public domain), coffee, chelsea
and camera (CC0, by their photographers), brick, grass and gravel (CC0 textures), coins and
immunohistochemistry (no known copyright restrictions). The grey ones are used as grey RGB.
scikit-image is imported when the first image is drawn, not with this module.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE, SUPERSAMPLE = 32, 4
"""Side of the images, pixels, and the factor they are drawn at before being reduced."""
PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "coffee", "chelsea", "camera", "brick", "grass", "gravel",
          "coins", "immunohistochemistry")
"""``skimage.data`` photographs the backgrounds are cropped from."""
BANDS = {"labeled": (0.0, 0.15), "unlabeled": (0.15, 0.75), "test": (0.75, 1.0)}
"""Each part's share of a photograph's width: its crops lie inside it."""

Point = tuple[float, float]
Part = tuple[str, list[Point], float]
"""``(layer, points, width)``: layer "body", "detail" (its second colour) or "hole" (cut out,
the background shows); a filled polygon when width is 0, else a stroke that wide (unit box)."""


def _box(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _oval(cx: float, cy: float, rx: float, ry: float, start: float = 0, end: float = 360) -> list[Point]:
    """Points along an ellipse from ``start`` to ``end`` degrees (clockwise, y down, 0 at the right)."""
    angles = np.deg2rad(np.linspace(start, end, 33))
    return list(zip((cx + rx * np.cos(angles)).tolist(), (cy + ry * np.sin(angles)).tolist()))


SHAPES: dict[str, list[Part]] = {
    "house": [("body", _box(.18, .45, .78, .92), 0), ("detail", [(.08, .48), (.48, .12), (.88, .48)], 0),
              ("body", _box(.64, .16, .74, .36), 0), ("detail", _box(.56, .64, .68, .92), 0),
              ("detail", _box(.28, .56, .42, .7), 0)],
    "tree": [("detail", _box(.44, .76, .56, .96), 0), ("body", [(.5, .04), (.7, .34), (.3, .34)], 0),
             ("body", [(.5, .18), (.78, .56), (.22, .56)], 0), ("body", [(.5, .36), (.86, .78), (.14, .78)], 0)],
    "car": [("body", [(.04, .5), (.88, .5), (.97, .6), (.97, .76), (.04, .76)], 0),
            ("body", [(.18, .5), (.26, .3), (.58, .3), (.74, .5)], 0),
            ("detail", [(.29, .34), (.44, .34), (.44, .48), (.24, .48)], 0),
            ("detail", [(.48, .34), (.57, .34), (.68, .48), (.48, .48)], 0),
            ("detail", _oval(.25, .76, .1, .1), 0), ("detail", _oval(.77, .76, .1, .1), 0)],
    "fish": [("body", [(.3, .5), (.05, .28), (.12, .5), (.05, .72)], 0),
             ("body", [(.42, .34), (.56, .16), (.66, .34)], 0),
             ("body", _oval(.56, .5, .34, .2), 0), ("detail", _oval(.77, .45, .04, .04), 0),
             ("detail", [(.68, .37), (.65, .5), (.68, .63)], .03)],
    "bird": [("body", [(.34, .55), (.04, .6), (.08, .72), (.36, .66)], 0), ("body", _oval(.48, .58, .24, .15), 0),
             ("body", _oval(.72, .38, .11, .11), 0), ("detail", [(.81, .33), (.97, .4), (.81, .45)], 0),
             ("detail", [(.32, .52), (.6, .47), (.5, .66)], 0), ("detail", _oval(.75, .35, .025, .025), 0),
             ("detail", [(.45, .72), (.43, .92)], .03), ("detail", [(.55, .72), (.57, .92)], .03)],
    "boat": [("detail", [(.04, .64), (.96, .6), (.82, .86), (.16, .86)], 0), ("detail", [(.46, .06), (.46, .64)], .03),
             ("body", [(.49, .08), (.49, .58), (.88, .58)], 0), ("body", [(.43, .2), (.43, .58), (.2, .58)], 0)],
    "cup": [("body", _oval(.68, .55, .18, .17), 0), ("hole", _oval(.7, .55, .09, .09), 0),
            ("body", [(.14, .3), (.64, .3), (.58, .86), (.2, .86)], 0), ("detail", _oval(.39, .3, .25, .05), 0),
            ("detail", _oval(.39, .88, .36, .05), 0)],
    "arrow": [("body", _box(.12, .45, .66, .55), 0), ("body", [(.6, .24), (.97, .5), (.6, .76)], 0),
              ("detail", [(.03, .28), (.19, .28), (.3, .45), (.14, .45)], 0),
              ("detail", [(.03, .72), (.19, .72), (.3, .55), (.14, .55)], 0)],
    "umbrella": [("body", _oval(.5, .5, .47, .42, 180, 360), 0),
                 *(("hole", _oval(x, .5, .115, .06, 180, 360), 0) for x in (.145, .38, .62, .855)),
                 ("detail", [(.5, .02), (.5, .84)], .04), ("detail", _oval(.59, .84, .09, .09, 180, 0), .04)],
    "key": [("body", _oval(.2, .5, .17, .2), 0), ("hole", _oval(.2, .5, .07, .08), 0),
            ("body", _box(.35, .45, .96, .55), 0), ("body", _box(.7, .55, .77, .72), 0),
            ("body", _box(.84, .55, .91, .66), 0), ("detail", _box(.5, .47, .93, .5), 0)],
}
CLASSES = list(SHAPES)


# ------------------------------------------------------------------ drawing
def silhouette(parts: list[Part], matrix: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks (body, detail) in [0, 1], each [side, side], of ``parts`` placed by ``matrix``.

    Args:
        parts: the shape, in unit-box coordinates.
        matrix: [2, 3] affine map from the unit box to canvas pixels.
        side: the canvas side, pixels.
    """
    body, detail = Image.new("L", (side, side)), Image.new("L", (side, side))
    pens = ImageDraw.Draw(body), ImageDraw.Draw(detail)
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))  # pixels per unit length
    for layer, points, width in parts:
        xy = np.c_[np.asarray(points), np.ones(len(points))] @ matrix.T  # [P, 2]
        xy = [tuple(p) for p in xy.tolist()]
        fills = {"body": (255, 0), "detail": (None, 255), "hole": (0, 0)}[layer]  # later parts cover earlier
        for pen, fill in zip(pens, fills):
            if fill is None:
                continue
            if width:
                pen.line(xy, fill=fill, width=max(1, round(width * scale)), joint="curve")
            else:
                pen.polygon(xy, fill=fill)
    return np.asarray(body, np.float32) / 255, np.asarray(detail, np.float32) / 255


def placement(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random [2, 3] map from the unit box to a ``side``-pixel canvas: mirror (p 0.5), rotation
    +-20 deg, object size 60-95% of the side, position anywhere that keeps it mostly inside."""
    size = rng.uniform(0.6, 0.95)
    angle = np.deg2rad(rng.uniform(-20, 20))
    mirror = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rotation @ mirror * size * side  # [2, 2]
    centre = (0.5 + rng.uniform(-1, 1, 2) * (1 - size) / 2) * side
    return np.c_[linear, centre - linear @ np.array([0.5, 0.5])]


@lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The background photographs as uint8 [H, W, 3] arrays (grey ones repeated into RGB)."""
    from skimage import data

    images = (getattr(data, name)() for name in PHOTOS)
    return tuple(np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3] for im in images)


def background(part: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """A random crop of a photograph, inside ``part``'s band, as float [side, side, 3] in [0, 255]."""
    photos = photographs()
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    left, right = (round(f * width) for f in BANDS[part])
    crop = round(np.exp(rng.uniform(np.log(24), np.log(min(160, right - left, height)))))
    x, y = rng.integers(left, right - crop + 1), rng.integers(0, height - crop + 1)
    image = Image.fromarray(photo[y:y + crop, x:x + crop]).resize((side, side), Image.Resampling.BICUBIC)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5) * side / SIZE))  # out of focus
    pixels = np.asarray(image, np.float32) * rng.uniform(0.7, 1.2)
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _colour(rng: np.random.Generator, value: float, hue: float | None = None) -> np.ndarray:
    """A random RGB colour in [0, 255] of brightness ``value`` in [0, 1] (hue uniform unless
    given, in [0, 1); saturation 0.2-1)."""
    drawn, saturation = rng.random(), rng.uniform(0.2, 1)
    hue = drawn if hue is None else hue
    rgb = np.clip(np.abs((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)  # fully saturated hue
    return 255 * value * (1 - saturation + saturation * rgb)


def scene(label: int, part: str, rng: np.random.Generator, body_hue: float | None = None) -> np.ndarray:
    """One image of class ``label`` on a background from ``part``'s band: uint8 [32, 32, 3]
    (``body_hue``: the object's hue, in [0, 1); random when None)."""
    side = SIZE * SUPERSAMPLE
    canvas = background(part, rng, side)  # [side, side, 3]
    body, detail = silhouette(SHAPES[CLASSES[label]], placement(rng, side), side)  # [side, side] each
    direction = rng.normal(size=2)
    ramp = np.linspace(-0.5, 0.5, side)
    light = 1 + rng.uniform(0.2, 0.6) * (direction[0] * ramp[None, :] + direction[1] * ramp[:, None])
    alpha = np.maximum(body, detail)  # [side, side]
    share = (detail / np.maximum(alpha, 1e-6))[..., None]  # of the detail colour, [side, side, 1]
    covered = body > 0.5
    behind = canvas[covered].mean() / 255 if covered.any() else 0.5  # the background's brightness there
    step = rng.uniform(0.3, 0.7)  # the body stands out from it, brighter or darker
    body_colour = _colour(rng, min(behind + step, 1.0) if behind < 0.5 else max(behind - step, 0.05), body_hue)
    detail_colour = _colour(rng, rng.uniform(0.25, 1))
    paint = (body_colour + share * (detail_colour - body_colour)) * light[..., None]  # [side, side, 3]
    alpha = alpha[..., None]
    canvas = canvas * (1 - alpha) + paint * alpha
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).reduce(SUPERSAMPLE)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 8), (SIZE, SIZE, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(40, 91)))
    return np.asarray(Image.open(buffer).convert("RGB"))
