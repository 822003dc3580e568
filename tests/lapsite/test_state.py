"""The state directory's files: the database readable by the platform's user only."""

from __future__ import annotations

import sqlite3
import stat

from lapsite.state import private_database


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_files_are_private(tmp_path):
    path = tmp_path / "lap.sqlite3"
    private_database(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    files = [path, tmp_path / "lap.sqlite3-wal", tmp_path / "lap.sqlite3-shm"]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    connection.close()


def test_an_older_world_readable_database_is_made_private(tmp_path):
    path = tmp_path / "lap.sqlite3"
    for name in ("lap.sqlite3", "lap.sqlite3-wal", "lap.sqlite3-shm"):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / name).chmod(0o644)
    private_database(path)
    assert sorted(mode(f) for f in tmp_path.iterdir()) == [0o600] * 3
