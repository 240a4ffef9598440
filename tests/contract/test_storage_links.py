"""contract.storage never follows a symbolic link, names folders by ASCII digits only, and names damaged JSON.

Real files and links on the local disk; each test snapshots the folder a link
points at and checks it byte for byte afterwards.
"""

import os

import pytest

from contract import json_files, layout, served, storage
from tests.helpers import ROOT, tree_digest


@pytest.fixture
def outside(tmp_path):
    """The user's files, outside any root."""
    folder = tmp_path / "outside"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"a")
    (folder / "deep" / "b.bin").write_bytes(bytes(range(256)))
    return folder


@pytest.fixture
def linked(tmp_path, outside):
    """A folder with a file, a link to a folder and a link to a file, both out of it."""
    folder = tmp_path / "root" / "serving_model" / "3"
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables").symlink_to(outside, target_is_directory=True)
    (folder / "notes.txt").symlink_to(outside / "a.txt")
    return folder


def test_files_lists_no_link_and_nothing_behind_one(linked):
    assert storage.backend.files(str(linked)) == ["saved_model.pb"]
    assert storage.backend.files(str(linked / "variables")) == []


def test_links_within_names_every_link_without_following_it(linked, outside):
    assert storage.links_within(linked) == {"notes.txt": str(outside / "a.txt"), "variables": str(outside)}
    assert storage.links_within(linked / "variables") == {".": str(outside)}
    assert storage.links_within("gs://bucket/root/serving_model/3") == {}


def test_rmtree_removes_links_never_their_targets(linked, outside):
    before = tree_digest(outside)
    storage.backend.rmtree(str(linked / "variables"))  # the link itself
    assert not (linked / "variables").exists() and tree_digest(outside) == before
    (linked / "variables").symlink_to(outside, target_is_directory=True)
    storage.backend.rmtree(str(linked))
    assert not linked.exists() and tree_digest(outside) == before


def test_copy_tree_refuses_a_folder_holding_a_link_before_copying(linked, tmp_path):
    with pytest.raises(storage.LinkRefusedError, match=r"cannot be copied: it holds a symbolic link \(notes.txt -> "):
        storage.copy_tree(str(linked), str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()


def test_a_version_with_a_link_is_incomplete(linked, outside):
    assert served.version_incomplete_reason(str(linked)).startswith("it holds a symbolic link (notes.txt -> ")
    assert served.version_incomplete_reason(str(linked / "variables")) == \
        f"it is a symbolic link (to {outside}), and links are never followed"


def test_move_aside_moves_links_as_links(linked, outside):
    before = tree_digest(outside)
    aside = linked.parent.parent / "serving_model.incomplete"
    moved = storage.move_aside(str(linked), str(aside), "3", layout.DIGESTS_FILE)
    assert not linked.exists()
    assert (aside / moved.rsplit("/", 1)[1] / "variables").is_symlink()
    assert tree_digest(outside) == before


def test_move_links_aside_takes_the_watched_names_only(tmp_path, outside):
    parent = tmp_path / "examples"
    parent.mkdir()
    (parent / "span-2").symlink_to(outside, target_is_directory=True)
    (parent / "elsewhere").symlink_to(outside, target_is_directory=True)
    (parent / "span-3").mkdir()
    before = tree_digest(outside)
    done = storage.move_links_aside(str(parent), str(tmp_path / "aside"), lambda n: layout.span_number(n) is not None)
    assert len(done) == 1 and done[0].startswith(f"{parent / 'span-2'} was refused: it is a symbolic link")
    assert sorted(p.name for p in parent.iterdir()) == ["elsewhere", "span-3"]
    [moved] = (tmp_path / "aside").iterdir()
    assert moved.is_symlink() and tree_digest(outside) == before


@pytest.mark.parametrize("name, number", [("12", 12), ("0", 0), ("²", None), ("٣", None), ("007", None),
                                          (" 3", None), ("1_0", None), ("3-x", None),
                                          (str(2**62), 2**62), (str(2**62 + 1), None), (str(2**63), None),
                                          ("9" * 23, None)])
def test_version_and_span_numbers_are_ascii_digits(name, number):
    assert layout.version_number(name) == number
    assert layout.span_number(f"span-{name}") == number


def test_odd_folders_are_named_and_links_are_not_named_twice(tmp_path, outside):
    serving = tmp_path / "serving_model"
    for name in ("1", "²", ".incoming-abc"):
        (serving / name).mkdir(parents=True)
    (serving / "model.config").write_text("a file, not a folder")
    (serving / "latest").symlink_to(outside, target_is_directory=True)
    lines = served.serving_dir_warnings(str(serving))
    assert lines == [f"{serving / 'latest'} is refused: it is a symbolic link (to {outside}), and links are never "
                     "followed; the next push or rollback moves it aside",
                     f"{serving / '²'} is not a version (a version's name is a number in ASCII digits, "
                     "at most 2**62): ignored"]


@pytest.mark.parametrize("content, reason", [
    (b'{"a": ', "not valid JSON (Expecting value: line 1 column 7 (char 6))"),
    (b"\xff{}", "not UTF-8 text, so not JSON"),
    (b"[]", "holds a list where an object belongs"),
    (b"null", "holds null where an object belongs"),
])
@pytest.mark.parametrize("read", [storage.read_json, json_files.read_local_json])
def test_read_json_names_the_file_and_what_is_wrong(tmp_path, content, reason, read):
    path = tmp_path / "record.json"
    path.write_bytes(content)
    with pytest.raises(storage.UnreadableFileError) as raised:
        read(str(path))
    assert str(raised.value) == f"{path}: {reason}" and raised.value.exit_code == 2
    path.write_bytes(b'{"a": 1}')
    assert read(str(path)) == {"a": 1}


@pytest.mark.parametrize("read", [storage.read_json, json_files.read_local_json])
def test_read_json_of_a_missing_file_is_one_line(tmp_path, read):
    with pytest.raises(storage.UnreadableFileError, match=r"record.json: cannot be read \("):
        read(str(tmp_path / "record.json"))


def test_a_local_json_read_never_waits_on_a_fifo_and_needs_no_tensorflow(tmp_path):
    """`submit --local` reads its run's summary this way: a process that never imported TensorFlow for it (about
    5 s of CPU), and a FIFO in the summary's place must not hang it."""
    import subprocess
    import sys

    fifo = tmp_path / "run_summary.json"
    os.mkfifo(fifo)
    with pytest.raises(json_files.UnreadableFileError, match=r"run_summary.json: cannot be read \(not a regular"):
        json_files.read_local_json(str(fifo))
    fifo.unlink()
    fifo.write_text('{"error": "failed at Trainer"}')
    probe = ("import sys; from orchestration.engines import kfp_runs; from cli.targets import local; "
             f"print(kfp_runs.run_outcome({str(tmp_path)!r}), local._outcome({str(tmp_path)!r}), "
             "'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0:3] == ["failed", "at", "Trainer"] and done.stdout.split()[-1] == "False"


def test_only_a_regular_file_is_read_locally(tmp_path):
    fifo, text = tmp_path / "fifo", tmp_path / "text"
    os.mkfifo(fifo)
    text.write_text("x")
    for read in (storage.backend.read, lambda path: storage.backend.open(path, "rb")):
        with pytest.raises(storage.NotAFileError, match=f"^{fifo}: a FIFO, not a file: never read$"):
            read(str(fifo))  # a FIFO would block the reader forever
        with pytest.raises(storage.NotAFileError, match="a folder"):
            read(str(tmp_path))
    assert storage.backend.read(str(text)) == b"x"
    storage.backend.open(str(tmp_path / "new"), "wb").close()  # writing is not refused
    version = tmp_path / "version" / "assets.extra"
    version.mkdir(parents=True)
    os.mkfifo(version / "SHA256SUMS")
    assert served.recorded_digests(str(tmp_path / "version")) is None
