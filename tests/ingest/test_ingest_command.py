"""The ingest command on a folder holding what breaks a naive reader: a name that is not UTF-8 and a file far
above the size cap. Each is quarantined by name with its reason; the rest of the folder is ingested."""

import json
import os

from ingest import synthetic
from tests.helpers import cli_in_process


def test_a_name_that_is_not_utf8_and_a_file_above_the_cap_are_quarantined_and_the_rest_ingested(tmp_path):
    images = tmp_path / os.fsdecode(b"images\xff\x1b[31m")  # the folder's own name too
    synthetic.write_demo_images(images, 3)
    latin1 = os.fsencode(images / "cat") + b"/caf\xe9.jpg"  # a name from a Latin-1 system
    with open(latin1, "wb") as f:
        f.write(synthetic.render_image("cat", 50))
    forged = "x.jpg\n  accepted            99"  # a name that would print a line of the table of its own
    (images / "dog" / forged).write_bytes(b"not an image")
    (images / "dog" / "\x1b[31mred.jpg").write_bytes(b"not an image either")
    with open(images / "dog" / "huge.jpg", "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB that take no disk
    for number in range(20):  # more than the table lists: the rest are in the report, which it names
        (images / "dog" / f"zz-{number:02d}.jpg").write_bytes(b"not an image")
    # through the command line's entry point in this process: what it printed is checked, as a process prints it
    result = cli_in_process("ingest", "--data-dir", images, "--output-dir", tmp_path / "out", "--max-file-mb", "1")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    # every line printable as UTF-8, as a process's stdout must print it (a name's undecodable bytes are escaped)
    result.stdout.encode("utf-8"), result.stderr.encode("utf-8")
    report = json.loads((tmp_path / "out" / "examples" / "span-1" / "ingest_report.json").read_text("ascii"))
    reasons = {q["file"]: q["reason"] for q in report["quarantined"]}
    assert [reasons.pop(f"dog/zz-{number:02d}.jpg")[:12] for number in range(20)] == ["not an image"] * 20
    assert {name: reasons.pop(name)[:12] for name in (f"dog/{forged}", "dog/\x1b[31mred.jpg")} == \
        dict.fromkeys((f"dog/{forged}", "dog/\x1b[31mred.jpg"), "not an image")
    assert reasons == {"cat/caf\\xe9.jpg": "name is not valid UTF-8",
                       "dog/huge.jpg": f"{64 << 20} bytes, above the file size limit of {1 << 20} bytes "
                                       "(--max-file-mb): not read"}
    assert report["examples_per_label"] == {"cat": 3, "dog": 3}
    assert "quarantined cat/caf\\xe9.jpg: name is not valid UTF-8" in result.stdout
    # The table shows a name's control characters as escapes: no forged line, nothing for the terminal to obey.
    assert "quarantined dog/x.jpg\\n  accepted            99: not an image" in result.stdout
    assert "\x1b" not in result.stdout and "\n  accepted            99\n" not in result.stdout
    listed = [line for line in result.stdout.splitlines() if line.startswith("  quarantined ") and ": " in line]
    assert len(listed) == 20, listed
    assert result.stdout.splitlines()[0].startswith(f"Ingest of folder:{tmp_path}/images\\xff\\x1b[31m -> span 1")
    assert report["source"] == f"folder:{tmp_path}/images\\xff\x1b[31m"  # JSON holds any character but a lone half
    written = tmp_path / "out" / "examples" / "span-1" / "ingest_report.json"
    assert f"  ... and 4 more quarantined (all of them in {written})" in result.stdout.splitlines()
