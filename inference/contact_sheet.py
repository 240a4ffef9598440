"""A contact sheet: each image with its predicted class and probability."""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from contract import features, whole_files
from contract.errors import CommandError, shown_name
from inference.predict import Prediction

_PAD = 6
_LINE = 16  # pixels per caption line


# Written into every sheet `predict` saves (a PNG text chunk, a JPEG comment): --sheet replaces a file only where it
# holds this, never a photo or any other file of the user's at that path.
MARK = "cats-vs-dogs-tfx contact sheet"


def save(sheet: Image.Image, path: str | os.PathLike) -> None:
    """Saves `sheet` as PNG or JPEG (by the path's suffix), marked as a contact sheet, whole or not at all
    (contract.whole_files): a full disk or a Ctrl-C leaves the earlier sheet, never a cut one (which, unmarked,
    every later `predict` would refuse to replace)."""
    path = pathlib.Path(path)
    if path.name.lower().endswith(".png"):
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Software", MARK)
        whole_files.replace_whole(path, lambda temporary: sheet.save(temporary, format="PNG", pnginfo=info), ".sheet-")
    else:
        whole_files.replace_whole(path, lambda temporary: sheet.save(temporary, format="JPEG", quality=90,
                                                                     comment=MARK.encode()), ".sheet-")


def is_sheet(path: str | os.PathLike) -> bool:
    """Whether the file at `path` is a contact sheet `save` wrote."""
    try:
        with Image.open(path) as image:
            return image.info.get("Software") == MARK or image.info.get("comment") == MARK.encode()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def check_path(path: pathlib.Path) -> None:
    """The sheet replaces only a contact sheet predict wrote (its mark: inference.contact_sheet.MARK), never a photo,
    an input or any other file at that path."""
    if path.is_symlink() or (path.exists() and not (path.is_file() and is_sheet(path))):  # never through a link
        raise CommandError(f"the contact sheet's path {shown_name(str(path))} holds a file predict did not "
                           "write (not one of its contact sheets): it is left as it is; give another --sheet PATH, "
                           "or move that file first")


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


def wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken at spaces where it can be and anywhere where it
    must (file names have none); every character is kept."""
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
            continue
        while font.getlength(word) > width:
            cut = 1
            while cut < len(word) and font.getlength(word[:cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def render(predictions: list[Prediction], images: dict[int, bytes], heatmaps: dict[int, np.ndarray] | None = None,
           tile: int = 200, columns: int = 5) -> Image.Image:
    """images: {index: JPEG bytes} of the readable predictions; heatmaps likewise (optional).

    Under each tile: the class and probability (or why the file could not be read) and the file name, wrapped
    to the tile's width, never cut."""
    font = ImageFont.load_default(size=13)
    names = shown_names([prediction.path for prediction in predictions])
    captions = []
    for index, prediction in enumerate(predictions):
        if prediction.error or index not in images:
            first, color = prediction.error or "unreadable", (150, 0, 0)
        else:
            first = f"{prediction.class_name}  {prediction.dog_probability:.2f}"
            color = (150, 70, 0) if prediction.class_name == features.POSITIVE_LABEL else (0, 80, 150)
        captions.append((wrap(first, font, tile - 4), color, wrap(names[index], font, tile - 4)))
    caption_height = max((len(a) + len(b)) * _LINE for a, _, b in captions) + 4 if captions else _LINE
    rows = max(1, -(-len(predictions) // columns))
    width = columns * (tile + _PAD) + _PAD
    grid_height = rows * (tile + caption_height + _PAD) + _PAD
    legend = _LEGEND_HEIGHT if heatmaps else 0
    sheet = Image.new("RGB", (width, grid_height + legend), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for index, (prediction, (first, color, name)) in enumerate(zip(predictions, captions)):
        x = _PAD + (index % columns) * (tile + _PAD)
        y = _PAD + (index // columns) * (tile + caption_height + _PAD)
        if prediction.error or index not in images:
            draw.rectangle([x, y, x + tile, y + tile], fill=(210, 210, 210))
            draw.text((x + 8, y + tile // 2 - 8), "unreadable", fill=(120, 0, 0), font=font)
        else:
            picture = Image.open(io.BytesIO(images[index]), formats=("JPEG",)).convert("RGB")  # checked JPEGs
            if heatmaps is not None and index in heatmaps:
                picture = overlay(picture, heatmaps[index])
            picture.thumbnail((tile, tile))
            sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        line_y = y + tile + 3
        for line in first:
            draw.text((x + 2, line_y), line, fill=color, font=font)
            line_y += _LINE
        for line in name:
            draw.text((x + 2, line_y), line, fill=(90, 90, 90), font=font)
            line_y += _LINE
    if heatmaps:
        _draw_legend(sheet, draw, font, grid_height)
    return sheet


_LEGEND_HEIGHT = _LINE + 20


def _draw_legend(sheet: Image.Image, draw: ImageDraw.ImageDraw, font, top: int) -> None:
    """The heat maps' colour scale: what each colour says of a region's weight in the model's answer."""
    left, width = _PAD, min(300, sheet.width - 2 * _PAD)
    bar = Image.fromarray(heat_colors(np.tile(np.linspace(0, 1, width), (10, 1))))
    sheet.paste(bar, (left, top))
    draw.text((left, top + 14), "Grad-CAM: dark blue, a region of little weight in the model's answer; red, of "
              "the most", fill=(60, 60, 60), font=font)


def shown_names(paths: list[str]) -> list[str]:
    """Each file's name as its caption shows it: its path below the folder all of them are in, so that two photos
    of one name in two folders are told apart (a single file: its name); control characters and bytes that are not
    UTF-8 escaped."""
    absolute = [os.path.abspath(path) for path in paths]
    try:
        common = os.path.commonpath([os.path.dirname(path) for path in absolute]) if absolute else ""
    except ValueError:  # no common folder (cannot happen on one file system tree): the full paths
        common = ""
    return [shown_name(os.path.relpath(path, common) if common else path) for path in absolute]
