"""The contact sheet `predict` writes: a tile per file, readable or not, with its caption never cut."""

import numpy as np

from inference import contact_sheet
from inference.predict import Prediction

TILE = 100


def _predictions(name="c/dog.jpg"):
    return [Prediction("a/cat.jpg", "cat", 0.1), Prediction("b/broken.jpg", None, None, "empty file"),
            Prediction(name, "dog", 0.9)]


def _tile(sheet, column, columns):
    """The top part of a tile of the first row (above the text an unreadable tile carries in its middle)."""
    step = sheet.width / columns
    left = int(column * step + step / 2 - TILE / 4)
    return np.asarray(sheet.crop((left, TILE // 8, left + TILE // 2, TILE // 3)))


def test_every_file_gets_a_tile_and_an_unreadable_one_stays_in_its_place_in_grey(demo_jpegs):
    images = {0: demo_jpegs["cat"][0], 2: demo_jpegs["dog"][0]}
    in_a_row = contact_sheet.render(_predictions(), images, tile=TILE, columns=3)
    two_rows = contact_sheet.render(_predictions(), images, tile=TILE, columns=2)
    assert in_a_row.width > two_rows.width and in_a_row.height < two_rows.height
    broken = _tile(in_a_row, 1, 3)
    assert (broken == broken[0, 0]).all() and broken[0, 0, 0] == broken[0, 0, 1] == broken[0, 0, 2], "flat grey"
    assert _tile(in_a_row, 0, 3).std() > 1 and _tile(in_a_row, 2, 3).std() > 1, "the readable files' pictures"


def test_a_heat_map_changes_its_tile_only(demo_jpegs):
    images = {0: demo_jpegs["cat"][0], 2: demo_jpegs["dog"][0]}
    plain = contact_sheet.render(_predictions(), images, tile=TILE, columns=3)
    heat = contact_sheet.render(_predictions(), images, {0: np.linspace(0, 1, 64 * 64).reshape(64, 64)},
                                tile=TILE, columns=3)
    assert not np.array_equal(_tile(plain, 0, 3), _tile(heat, 0, 3))
    assert np.array_equal(_tile(plain, 2, 3), _tile(heat, 2, 3))


def test_a_long_file_name_wraps_and_is_kept_whole(demo_jpegs):
    images = {0: demo_jpegs["cat"][0], 2: demo_jpegs["dog"][0]}
    short = contact_sheet.render(_predictions(), images, tile=TILE, columns=3)
    long_name = "c/" + "a_very_long_photo_name_from_a_phone_" * 3 + ".jpg"
    wrapped = contact_sheet.render(_predictions(long_name), images, tile=TILE, columns=3)
    assert wrapped.width == short.width and wrapped.height > short.height
    font = contact_sheet.ImageFont.load_default(size=13)
    lines = contact_sheet.wrap(long_name.rsplit("/", 1)[-1], font, TILE - 4)
    assert "".join(lines) == long_name.rsplit("/", 1)[-1] and len(lines) > 1


def test_a_caption_names_a_file_below_the_folder_all_are_in_so_that_two_of_one_name_differ():
    assert contact_sheet.shown_names(["/p/sub/dog2.jpg", "/p/other/dog2.jpg", "/p/a.jpg"]) == \
        ["sub/dog2.jpg", "other/dog2.jpg", "a.jpg"]
    assert contact_sheet.shown_names(["/p/sub/dog2.jpg"]) == ["dog2.jpg"]
    assert contact_sheet.shown_names(["/p/two\nlines.jpg", "/p/caf\udce9.jpg"]) == ["two\\nlines.jpg", "caf\\xe9.jpg"]


def test_heat_maps_come_with_their_colour_scale(demo_jpegs):
    images = {0: demo_jpegs["cat"][0], 2: demo_jpegs["dog"][0]}
    plain = contact_sheet.render(_predictions(), images, tile=TILE, columns=3)
    heat = contact_sheet.render(_predictions(), images, {0: np.zeros((8, 8))}, tile=TILE, columns=3)
    assert heat.height == plain.height + contact_sheet._LEGEND_HEIGHT
    width = min(300, heat.width - 2 * contact_sheet._PAD)
    scale = np.asarray(heat)[plain.height + 2, contact_sheet._PAD:contact_sheet._PAD + width]
    assert tuple(scale[0]) == tuple(contact_sheet.heat_colors(np.zeros(1))[0]), "dark blue at the left"
    assert scale[-1][0] > 200 and scale[-1][2] < 60, "to red at the right"
