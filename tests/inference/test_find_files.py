"""The files `predict` classifies from the paths it is given (inference.predict.find_files)."""

from inference import predict
from ingest import sources


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
    assert sources.passed_over_phrase(passed_over) == \
        "4 file(s) and 2 folder(s) the operating system keeps (.DS_Store, ._*, @eaDir/, Thumbs.db, __MACOSX/, " \
        "desktop.ini)"
