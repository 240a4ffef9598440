"""The contact sheet keeps every character of its captions, wrapped to the tile."""

from PIL import ImageFont

from inference import contact_sheet
from inference.predict import Prediction

LONG_ERROR = "not an image (unrecognized format: the file starts with 3c 21 64 6f, an HTML page?)"
LONG_NAME = "IMG_20240817_183355_from_the_family_album_backup_copy_of_the_cat_on_the_sofa.jpg"


def test_wrapped_lines_fit_the_width_and_keep_every_character():
    font = ImageFont.load_default(size=13)
    for text in (LONG_ERROR, LONG_NAME, "cat  0.03", ""):
        lines = contact_sheet.wrap(text, font, 196)
        assert all(font.getlength(line) <= 196 for line in lines), lines
        assert " ".join(lines).replace(" ", "") == text.replace(" ", "")
    assert len(contact_sheet.wrap(LONG_NAME, font, 196)) > 1


def test_the_caption_area_grows_with_the_longest_caption(demo_jpegs):
    short = [Prediction("cat.jpg", "cat", 0.1)]
    long = short + [Prediction(f"photos/{LONG_NAME}", None, None, error=LONG_ERROR)]
    images = {0: demo_jpegs["cat"][0]}
    assert contact_sheet.render(long, images).height > contact_sheet.render(short, images).height
