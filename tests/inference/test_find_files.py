"""The files `predict` classifies from the paths it is given (inference.predict.find_files)."""

import os

from inference import predict
from ingest import system_files
from tests.helpers import deep_tree


def test_an_operating_systems_own_files_inside_a_folder_are_passed_over_and_counted(tmp_path):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    (photos / "__MACOSX" / "trip").mkdir(parents=True)
    (photos / "trip" / "@eaDir" / "b.png").mkdir(parents=True)
    for name in ("a.jpg", ".DS_Store", "._a.jpg", "trip/Thumbs.db", "trip/b.png", "trip/desktop.ini", ".hidden.jpg",
                 "__MACOSX/trip/._b.png", "__MACOSX/a.jpg", "trip/@eaDir/b.png/SYNOFILE_THUMB_M.jpg"):
        (photos / name).write_bytes(b"x")
    named = tmp_path / ".DS_Store"
    named.write_bytes(b"x")
    passed_over = []
    found = predict.find_files([photos, named, tmp_path / "missing.jpg"], passed_over)
    assert found == [photos / ".hidden.jpg", photos / "a.jpg", photos / "trip" / "b.png", named,
                     tmp_path / "missing.jpg"], "a file named is classified, a missing one kept to be reported"
    assert sorted(passed_over) == [f"{photos}/{name}" for name in (
        ".DS_Store", "._a.jpg", "__MACOSX/", "trip/@eaDir/", "trip/Thumbs.db", "trip/desktop.ini")], \
        "a folder of them is passed over whole: a NAS's thumbnails are the same photos again"
    assert system_files.passed_over_phrase(passed_over) == \
        "4 file(s) and 2 folder(s) the operating system keeps (.DS_Store, ._*, @eaDir/, Thumbs.db, __MACOSX/, " \
        "desktop.ini)"


def test_each_file_once_a_loop_walked_once_a_pipe_never_opened_a_deep_tree_no_fault(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    (photos / "self").symlink_to(photos)  # a loop
    os.mkfifo(photos / "pipe.jpg")  # opening it would wait for a writer
    with deep_tree(photos, 1100) as deep:  # deeper than Python's recursion limit
        (deep / "deep.jpg").write_bytes(b"x")
        found = predict.find_files([photos, photos, photos / "a.jpg"])
    assert found == [photos / "a.jpg", deep / "deep.jpg"], "each file once, the pipe left alone"


def test_folders_are_walked_as_ingest_walks_them_links_followed_and_what_cannot_be_read_kept(tmp_path):
    real, photos = tmp_path / "real", tmp_path / "photos"
    (real / "cats").mkdir(parents=True)
    (real / "cats" / "c.jpg").write_bytes(b"x")
    photos.mkdir()
    (photos / "cats").symlink_to(real / "cats")  # class folders are often links to where the photos live
    (photos / "@eaDir").symlink_to(real / "cats")
    (photos / "gone.jpg").symlink_to(tmp_path / "nowhere")
    (photos / ".Trash-1000" / "files").mkdir(parents=True)
    (photos / ".Trash-1000" / "files" / "deleted.jpg").write_bytes(b"x")
    (photos / "#recycle").mkdir()
    (photos / "#recycle" / "old.jpg").write_bytes(b"x")
    (photos / "Icon\r").write_bytes(b"")
    passed_over = []
    assert predict.find_files([photos], passed_over) == [photos / "cats" / "c.jpg", photos / "gone.jpg"], \
        "a broken link is kept, to be reported as unreadable"
    assert sorted(passed_over) == [f"{photos}/{name}" for name in ("#recycle/", ".Trash-1000/", "@eaDir/", "Icon\r")]
    assert system_files.passed_over_phrase(passed_over) == \
        "1 file(s) and 3 folder(s) the operating system keeps (#recycle/, .Trash-1000/, @eaDir/, Icon\\r)", \
        "a carriage return in a name is shown escaped, not sent to the terminal"


def test_the_table_gives_each_file_one_line_whatever_its_name_holds():
    predictions = [predict.Prediction("photos/two\nlines.jpg", "dog", 0.75),
                   predict.Prediction("photos/\udcff.jpg", None, None, error="empty file")]
    lines = predict.table(predictions).splitlines()
    assert len(lines) == 3 and lines[1].startswith("photos/two\\nlines.jpg  dog")
    assert lines[2].startswith("photos/\\xff.jpg") and lines[2].endswith("UNREADABLE: empty file")

