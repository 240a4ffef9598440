"""One sink per root: the lock on its traffic folder."""

import os

from traffic import lock


def test_a_fifo_where_the_sink_lock_belongs_does_not_hang_the_start(tmp_path):
    import threading

    (tmp_path / "traffic").mkdir()
    os.mkfifo(tmp_path / "traffic" / lock.SINK_LOCK)
    held = []
    thread = threading.Thread(target=lambda: held.append(lock.hold_sink_lock(str(tmp_path / "traffic"))),
                              daemon=True)  # opening a FIFO for reading waits for a writer, unless non-blocking
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(held) == 1
    os.close(held[0])
