"""The files `predict` classifies from the paths it is given (inference.predict.find_files)."""

from inference import predict


def test_an_operating_systems_own_files_inside_a_folder_are_passed_over_and_counted(tmp_path):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for name in ("a.jpg", ".DS_Store", "._a.jpg", "trip/Thumbs.db", "trip/b.png", "trip/desktop.ini", ".hidden.jpg"):
        (photos / name).write_bytes(b"x")
    named = tmp_path / ".DS_Store"
    named.write_bytes(b"x")
    passed_over = []
    found = predict.find_files([photos, named, tmp_path / "missing.jpg"], passed_over)
    assert found == [photos / ".hidden.jpg", photos / "a.jpg", photos / "trip" / "b.png", named,
                     tmp_path / "missing.jpg"], "a file named is classified, a missing one kept to be reported"
    assert sorted(p.name for p in passed_over) == [".DS_Store", "._a.jpg", "Thumbs.db", "desktop.ini"]
