"""A contact sheet: each image with its predicted class and probability."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from contract import features
from inference.predict import Prediction

_CAPTION = 38
_PAD = 6


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8, dark blue (0) through yellow to red (1)."""
    stops = np.array([[0, 0, 130], [0, 130, 255], [0, 220, 120], [255, 230, 0], [255, 30, 0]], float)
    position = np.clip(heat, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    fraction = (position - low)[..., None]
    return (stops[low] * (1 - fraction) + stops[low + 1] * fraction).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    colors = Image.fromarray(heat_colors(heat)).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), colors, alpha)


def render(predictions: list[Prediction], images: dict[int, bytes], heatmaps: dict[int, np.ndarray] | None = None,
           tile: int = 200, columns: int = 5) -> Image.Image:
    """images: {index: JPEG bytes} of the readable predictions; heatmaps likewise (optional)."""
    rows = max(1, -(-len(predictions) // columns))
    width = columns * (tile + _PAD) + _PAD
    sheet = Image.new("RGB", (width, rows * (tile + _CAPTION + _PAD) + _PAD), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for index, prediction in enumerate(predictions):
        x = _PAD + (index % columns) * (tile + _PAD)
        y = _PAD + (index // columns) * (tile + _CAPTION + _PAD)
        if prediction.error or index not in images:
            draw.rectangle([x, y, x + tile, y + tile], fill=(210, 210, 210))
            draw.text((x + 8, y + tile // 2 - 8), "unreadable", fill=(120, 0, 0), font=font)
            caption, color = (prediction.error or "")[:30], (150, 0, 0)
        else:
            picture = Image.open(io.BytesIO(images[index])).convert("RGB")
            if heatmaps is not None and index in heatmaps:
                picture = overlay(picture, heatmaps[index])
            picture.thumbnail((tile, tile))
            sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
            caption = f"{prediction.class_name}  {prediction.dog_probability:.2f}"
            color = (150, 70, 0) if prediction.class_name == features.POSITIVE_LABEL else (0, 80, 150)
        name = prediction.path.rsplit("/", 1)[-1]
        draw.text((x + 2, y + tile + 3), caption, fill=color, font=font)
        draw.text((x + 2, y + tile + 20), name[:32], fill=(90, 90, 90), font=font)
    return sheet
