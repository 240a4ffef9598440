"""The files `predict` classifies from the paths it is given (inference.predict.find_files)."""

import json
import os
import socket
import subprocess
import sys

from contract import features
from inference import predict
from ingest import synthetic, system_files
from tests.helpers import ROOT, deep_tree, without_root_powers


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


def _classify_all_as_dogs(images):
    return {features.PROBABILITY_OUTPUT: [0.5] * len(images), features.CLASS_OUTPUT: [b"dog"] * len(images)}


def test_each_file_once_a_loop_walked_once_a_pipe_reported_never_opened_a_deep_tree_no_fault(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(synthetic.render_image("cat", 1))
    (photos / "self").symlink_to(photos)  # a loop
    os.mkfifo(photos / "pipe.jpg")  # opening it would wait for a writer
    (photos / "linked-pipe.jpg").symlink_to("pipe.jpg")
    with deep_tree(photos, 1100) as deep:  # deeper than Python's recursion limit
        (deep / "deep.jpg").write_bytes(b"x")
        found = predict.find_files([photos, photos, photos / "a.jpg"])
    assert found == [photos / "a.jpg", deep / "deep.jpg", photos / "linked-pipe.jpg"], \
        "each file once (the pipe and its link are one), kept to be reported"
    predictions, _ = predict.predict_files(_classify_all_as_dogs, [photos / "a.jpg", photos / "linked-pipe.jpg",
                                                                   photos / "pipe.jpg"])
    assert [p.error for p in predictions] == [None, "not a regular file: a named pipe",
                                              "not a regular file: a named pipe"], "reported, and nothing waited"


def test_a_device_a_socket_and_a_link_that_cannot_be_followed_are_each_reported_never_read(tmp_path):
    """predict read /dev/zero until memory ran out, waited on a pipe reached through a link, and dropped a socket,
    a loop of links and a link to /dev/null without a word."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(synthetic.render_image("cat", 1))
    (photos / "zero.jpg").symlink_to("/dev/zero")
    (photos / "loop-a.jpg").symlink_to("loop-b.jpg")
    (photos / "loop-b.jpg").symlink_to("loop-a.jpg")
    with open(photos / "huge.jpg", "wb") as huge:  # sparse: no disk
        huge.truncate(predict.MAX_PHOTO_BYTES + 1)
    listening = socket.socket(socket.AF_UNIX)
    try:
        listening.bind(str(photos / "sock.jpg"))
        found = predict.find_files([photos, "/dev/zero"])
        assert found == [photos / "a.jpg", *(photos / name for name in ("huge.jpg", "loop-a.jpg", "loop-b.jpg",
                                                                        "sock.jpg", "zero.jpg"))], \
            "every entry kept; /dev/zero named twice is one"
        predictions, _ = predict.predict_files(_classify_all_as_dogs, found)
    finally:
        listening.close()
    assert [p.error for p in predictions] == [
        None, f"{predict.MAX_PHOTO_BYTES + 1} bytes, above the 256 MiB a photo may have: not read",
        "cannot be read: a symbolic link in a loop (loop-b.jpg)",
        "cannot be read: a symbolic link in a loop (loop-a.jpg)",
        "not a regular file: a socket", "not a regular file: a character device"]


def test_a_file_is_one_file_however_its_path_reads(tmp_path):
    """Paths were told apart by their text: a file named and reached through a link was classified twice, and
    top/link/../x.jpg (which a link makes another file) taken for top/x.jpg and dropped."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"x")
    (tmp_path / "alink").symlink_to("a")
    (tmp_path / "real" / "inner").mkdir(parents=True)
    (tmp_path / "real" / "x.jpg").write_bytes(b"other")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "x.jpg").write_bytes(b"x")
    (tmp_path / "top" / "lnk").symlink_to(tmp_path / "real" / "inner")
    found = predict.find_files([tmp_path / "a" / "x.jpg", tmp_path / "alink", f"{tmp_path}/top/lnk/../x.jpg",
                                tmp_path / "top" / "x.jpg"])
    assert found == [tmp_path / "a" / "x.jpg", tmp_path / "top" / "lnk" / ".." / "x.jpg", tmp_path / "top" / "x.jpg"]


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



_CLASSIFY_IN_A_PROCESS = """
import json, sys
from contract import features
from inference import predict
serve = lambda images: {features.PROBABILITY_OUTPUT: [0.5] * len(images), features.CLASS_OUTPUT: [b"dog"] * len(images)}
predictions, _ = predict.predict_files(serve, predict.find_files(sys.argv[1:]))
print(json.dumps({p.path: p.error for p in predictions}))
"""


def test_a_folder_that_can_be_listed_but_not_entered_marks_its_files_and_the_rest_are_classified(tmp_path):
    """One such folder stopped the whole command (the check of whether a path was a folder raised in turn)."""
    photos = tmp_path / "photos"
    (photos / "noexec").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(synthetic.render_image("dog", 1))
    (photos / "noexec" / "c.jpg").write_bytes(synthetic.render_image("cat", 2))
    (photos / "closed").mkdir()
    (photos / "closed" / "d.jpg").write_bytes(synthetic.render_image("cat", 3))
    (photos / "noexec").chmod(0o444)  # its names can be read, its files not reached
    (photos / "closed").chmod(0)
    try:
        result = subprocess.run([*without_root_powers(), sys.executable, "-c", _CLASSIFY_IN_A_PROCESS, str(photos)],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        (photos / "noexec").chmod(0o755)
        (photos / "closed").chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {
        str(photos / "a.jpg"): None,
        str(photos / "closed"): "a folder that cannot be listed (Permission denied): its files were not classified",
        str(photos / "noexec" / "c.jpg"): "cannot be read: Permission denied"}


def test_a_link_back_to_a_folder_the_photos_are_in_adds_nothing(tmp_path):
    """A link to the home folder (or to /) in a folder of photos walked the whole of it, half a million entries,
    each then read (or sent to a server with --url)."""
    photos = tmp_path / "photos"
    (tmp_path / "Documents").mkdir()
    (tmp_path / "Documents" / "taxes.pdf").write_bytes(b"x")
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    (photos / "home").symlink_to(tmp_path, target_is_directory=True)
    (photos / "root").symlink_to("/", target_is_directory=True)
    (tmp_path / "self").symlink_to(photos, target_is_directory=True)
    found = predict.find_files([photos])
    assert found == [photos / "a.jpg", photos / "home", photos / "root"], "not walked, kept to be reported"
    predictions, _ = predict.predict_files(_classify_all_as_dogs, found[1:])
    assert [p.error for p in predictions] == ["a link back to a folder this one is in: not followed (it would walk "
                                              "that folder again, and all it holds)"] * 2
    assert predict.find_files([tmp_path / "self"])[0] == tmp_path / "self" / "a.jpg", "a folder given by a link"


def test_what_is_found_does_not_hang_on_the_order_of_the_paths_nor_on_a_link_in_the_path_given(tmp_path):
    """With `a/b` given before `a`, a link in it back to `a` was reported although `a` was classified too; a path
    given through a link below its own target (a/b/c/up -> a) had its real subfolder b/ taken for a loop."""
    a = tmp_path / "a"
    (a / "b" / "c").mkdir(parents=True)
    (a / "top.jpg").write_bytes(b"t")
    (a / "b" / "mid.jpg").write_bytes(b"m")
    (a / "b" / "c" / "low.jpg").write_bytes(b"l")
    (a / "b" / "c" / "up").symlink_to("../..", target_is_directory=True)
    names = lambda found: sorted(path.name for path in found)  # noqa: E731
    assert names(predict.find_files([a / "b", a])) == names(predict.find_files([a, a / "b"])) == \
        ["low.jpg", "mid.jpg", "top.jpg"]
    assert names(predict.find_files([a / "b" / "c" / "up"])) == ["low.jpg", "mid.jpg", "top.jpg"]
