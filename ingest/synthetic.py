"""Deterministic generator of a small, learnable cat/dog image set.

The demo and the tests cannot download real photos, so this draws cartoon
animal faces whose classes differ the way real cats and dogs do to a
convolutional net: ear shape (pointed vs. floppy), eyes, muzzle and fur
palette. Backgrounds, sizes, positions and lighting vary within both classes.
Each image depends only on (seed, class, index), so growing the set keeps the
earlier files byte for byte.

Other looks draw the same two classes differently, so that a setting can be
chosen on some looks and checked on others it was never tuned on
(benchmarks/looks.py): "dusk" (a dim, washed-out, grainy photo), "sketch"
(grey pencil lines on paper: no fur colour left), "clutter" (a busy,
saturated background with fur-coloured blobs), "recolour" (each image's hues
turned by a random angle), "pose" (a smaller animal anywhere in the frame,
tilted up to 40 degrees) and "print" (few colours, dithered, on grainy paper).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from contract.features import LABEL_NAMES

# Fur palettes overlap little on purpose: a randomly initialized network (the
# demo has no ImageNet weights) picks up colour and texture long before shape.
_CAT_FUR = [(235, 135, 50), (190, 190, 200), (245, 240, 230), (215, 120, 70)]
_DOG_FUR = [(110, 65, 35), (45, 38, 32), (150, 100, 55), (85, 60, 45)]


@dataclasses.dataclass(frozen=True)
class DemoSetSummary:
    root: pathlib.Path
    counts: dict[str, int]


def _jitter(rng: random.Random, color: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    top = _muted(rng)
    bottom = _muted(rng)
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randint(0, 4)):
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        r = rng.randint(5, max(6, width // 6))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_muted(rng))
    return image


def _muted(rng: random.Random) -> tuple[int, int, int]:
    """A low-saturation colour: backgrounds must not out-shout the animal."""
    grey = rng.randint(70, 200)
    return tuple(max(0, min(255, grey + rng.randint(-30, 30))) for _ in range(3))


def _draw_cat(draw: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, r: float) -> None:
    fur = _jitter(rng, rng.choice(_CAT_FUR))
    inner = _jitter(rng, (240, 160, 170), 15)
    for side in (-1, 1):  # tall pointed ears
        base_x = cx + side * r * 0.55
        ear = [(base_x - r * 0.35, cy - r * 0.5), (base_x + r * 0.35, cy - r * 0.5),
               (base_x + side * r * 0.15, cy - r * 1.45)]
        draw.polygon(ear, fill=fur)
        draw.polygon([(x * 0.7 + base_x * 0.3, y * 0.75 + (cy - r * 0.5) * 0.25) for x, y in ear], fill=inner)
    draw.ellipse([cx - r, cy - r * 0.85, cx + r, cy + r * 0.85], fill=fur)
    stripe = _jitter(rng, tuple(int(c * 0.55) for c in fur), 10)  # tabby stripes
    for k in (-2, -1, 0, 1, 2):
        draw.line([(cx + k * r * 0.2, cy - r * 0.82), (cx + k * r * 0.15, cy - r * 0.4)],
                  fill=stripe, width=max(2, int(r * 0.07)))
    for side in (-1, 1):
        for k in (0, 1):
            y = cy + r * (0.05 + 0.2 * k)
            draw.line([(cx + side * r * 0.97, y), (cx + side * r * 0.6, y + r * 0.05)],
                      fill=stripe, width=max(2, int(r * 0.06)))
    eye = _jitter(rng, (120, 200, 60), 30)
    for side in (-1, 1):  # almond eyes with slit pupils
        ex = cx + side * r * 0.38
        draw.ellipse([ex - r * 0.2, cy - r * 0.22, ex + r * 0.2, cy + r * 0.02], fill=eye)
        draw.ellipse([ex - r * 0.04, cy - r * 0.21, ex + r * 0.04, cy + r * 0.01], fill=(10, 10, 10))
    draw.polygon([(cx - r * 0.1, cy + r * 0.15), (cx + r * 0.1, cy + r * 0.15), (cx, cy + r * 0.28)],
                 fill=(230, 120, 140))
    for side in (-1, 1):  # whiskers
        for k in (-1, 0, 1):
            draw.line([(cx + side * r * 0.2, cy + r * 0.3), (cx + side * r * 1.2, cy + r * (0.25 + k * 0.15))],
                      fill=(250, 250, 250), width=max(1, int(r * 0.02)))


def _draw_dog(draw: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, r: float) -> None:
    fur = _jitter(rng, rng.choice(_DOG_FUR))
    ear_color = _jitter(rng, tuple(int(c * 0.65) for c in fur), 15)
    draw.ellipse([cx - r * 0.95, cy - r * 0.95, cx + r * 0.95, cy + r * 0.9], fill=fur)
    for side in (-1, 1):  # long floppy ears hanging beside the face
        ex = cx + side * r * 0.95
        draw.ellipse([ex - r * 0.32, cy - r * 0.85, ex + r * 0.32, cy + r * 0.55], fill=ear_color)
    muzzle = _jitter(rng, (235, 215, 185), 20)
    draw.ellipse([cx - r * 0.5, cy + r * 0.05, cx + r * 0.5, cy + r * 0.75], fill=muzzle)
    for side in (-1, 1):  # round dark eyes with a highlight
        ex = cx + side * r * 0.38
        draw.ellipse([ex - r * 0.13, cy - r * 0.3, ex + r * 0.13, cy - r * 0.04], fill=(35, 20, 10))
        draw.ellipse([ex - r * 0.04, cy - r * 0.25, ex + r * 0.02, cy - r * 0.19], fill=(255, 255, 255))
    draw.ellipse([cx - r * 0.2, cy + r * 0.1, cx + r * 0.2, cy + r * 0.35], fill=(20, 15, 15))  # big nose
    if rng.random() < 0.6:  # tongue
        draw.ellipse([cx - r * 0.12, cy + r * 0.5, cx + r * 0.12, cy + r * 0.85], fill=(225, 90, 110))


DEMO_SIDES = (120, 360)  # smallest and largest side in pixels


LOOKS = ("cartoon", "dusk", "sketch", "clutter", "recolour", "pose", "print")


def _dusk(image: Image.Image, rng: random.Random) -> Image.Image:
    """Low light: darker, most of the colour gone, sensor grain, a soft focus."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.35, 0.6))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.25, 0.55))
    # Pillow's effect_noise draws from an unseeded generator: the grain comes from this image's own seed.
    noise = np.random.default_rng(rng.getrandbits(32)).normal(128, rng.uniform(20, 45), image.size[::-1])
    grain = Image.fromarray(noise.clip(0, 255).astype(np.uint8)).convert("RGB")
    image = Image.blend(image, grain, rng.uniform(0.12, 0.22))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.8)))


def _sketch(image: Image.Image, rng: random.Random) -> Image.Image:
    """Pencil lines: the scene's edges, dark grey on off-white paper; colour is gone."""
    edges = image.convert("L").filter(ImageFilter.FIND_EDGES)
    lines = Image.eval(edges, lambda v: 255 - min(255, int(v * rng.uniform(2.0, 3.0))))
    paper = Image.new("L", image.size, rng.randint(225, 250))
    return Image.composite(lines, paper, Image.eval(lines, lambda v: 255 if v < 200 else 0)).convert("RGB")


def _clutter(draw: ImageDraw.ImageDraw, rng: random.Random, size: tuple[int, int]) -> None:
    """Stripes and blobs in saturated colours and in both classes' fur colours, behind the animal."""
    width, height = size
    for _ in range(rng.randint(4, 9)):
        x0 = rng.randint(-width // 2, width)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.line([(x0, 0), (x0 + rng.randint(-width, width), height)], fill=colour, width=rng.randint(3, 14))
    for _ in range(rng.randint(6, 14)):
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        r = rng.randint(4, max(5, width // 8))
        colour = _jitter(rng, rng.choice(_CAT_FUR + _DOG_FUR)) if rng.random() < 0.5 else \
            tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)


def _recolour(image: Image.Image, rng: random.Random) -> Image.Image:
    """Every hue turned by one random angle of at least 60 degrees: the fur palettes no longer tell the class."""
    hue, saturation, value = image.convert("HSV").split()
    turn = rng.randint(43, 213)  # of 256
    hue = hue.point(lambda h: (h + turn) % 256)
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _print(image: Image.Image, rng: random.Random) -> Image.Image:
    """A cheap colour print: few colours, dithered, on grainy paper."""
    colours = rng.randint(5, 9)
    image = image.quantize(colors=colours, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    noise = np.random.default_rng(rng.getrandbits(32)).normal(128, 60, image.size[::-1])
    grain = Image.fromarray(noise.clip(0, 255).astype(np.uint8)).convert("RGB")
    return Image.blend(image, grain, rng.uniform(0.08, 0.15))


_FINISH = {"dusk": _dusk, "sketch": _sketch, "recolour": _recolour, "print": _print}


def render_image(class_name: str, index: int, seed: int = 0, sides: tuple[int, int] = DEMO_SIDES,
                 look: str = "cartoon") -> bytes:
    """Returns the JPEG bytes of demo image `index` of `class_name`, each side within `sides`."""
    if class_name not in LABEL_NAMES:
        raise ValueError(f"class_name must be one of {LABEL_NAMES}, got {class_name!r}")
    if look not in LOOKS:
        raise ValueError(f"look must be one of {LOOKS}, got {look!r}")
    rng = random.Random(f"{seed}/{class_name}/{index}")
    size = (rng.randint(*sides), rng.randint(*sides))
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    if look == "clutter":
        _clutter(draw, rng, size)
    short = min(size)
    r = short * (rng.uniform(0.15, 0.24) if look == "pose" else rng.uniform(0.28, 0.36))
    cx = rng.uniform(r * 1.3, size[0] - r * 1.3)
    cy = rng.uniform(r * 1.45, size[1] - r * 0.95)
    (_draw_cat if class_name == "cat" else _draw_dog)(draw, rng, cx, cy, r)
    tilt = 40 if look == "pose" else 15
    image = image.rotate(rng.uniform(-tilt, tilt), resample=Image.BILINEAR, fillcolor=_muted(rng))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if look in _FINISH:
        image = _FINISH[look](image, rng)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(75, 95))
    return out.getvalue()


# Images per class of the demo (`run --demo`).
DEMO_IMAGES_PER_CLASS = 300


def write_demo_images(root: str | pathlib.Path, per_class: int, seed: int = 0,
                      sides: tuple[int, int] = DEMO_SIDES, look: str = "cartoon") -> DemoSetSummary:
    """Writes `per_class` images of each class as `<root>/<class>/<class>_NNNNN.jpg`.

    Files that already exist with the right content are left untouched (their
    modification time too), so regenerating the same set changes nothing.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    root = pathlib.Path(root)
    counts = {}
    for class_name in LABEL_NAMES:
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            path = folder / f"{class_name}_{index:05d}.jpg"
            data = render_image(class_name, index, seed, sides, look)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        counts[class_name] = per_class
    return DemoSetSummary(root=root, counts=counts)
