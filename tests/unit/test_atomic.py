"""Atomic writes: whole or nothing, readable by the umask's users, durable when asked, and a
replaced folder that never goes missing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from braincls.common import atomic
from braincls.common.atomic import atomic_dir, write_bytes, write_json, write_parquet


@pytest.fixture
def group_umask() -> Iterator[None]:
    """The umask of a team sharing a data root through a group (0o002)."""
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_get_the_umasks_mode_not_the_temporary_files(
    tmp_path: Path, group_umask: None
) -> None:
    write_json(tmp_path / "record.json", {"a": 1})
    write_bytes(tmp_path / "model.bin", b"x")
    write_parquet(tmp_path / "table.parquet", pd.DataFrame({"a": [1]}))
    assert {p.name: oct(_mode(p)) for p in sorted(tmp_path.iterdir())} == {
        "model.bin": "0o664",
        "record.json": "0o664",
        "table.parquet": "0o664",
    }


def test_folders_get_the_umasks_mode(tmp_path: Path, group_umask: None) -> None:
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "model.keras").write_bytes(b"x")
    assert oct(_mode(tmp_path / "model")) == "0o775"
    os.umask(0o077)  # a private umask stays private
    with atomic_dir(tmp_path / "private") as staging:
        write_bytes(staging / "f", b"x")
    assert (oct(_mode(tmp_path / "private")), oct(_mode(tmp_path / "private" / "f"))) == (
        "0o700",
        "0o600",
    )


def test_durable_writes_flush_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_json(tmp_path / "plain.json", {})
    assert synced == []  # manifests and reports: no fsync
    write_json(tmp_path / "state.json", {}, durable=True)
    assert synced[-1] == str(tmp_path)
    assert any(name.startswith(str(tmp_path / ".state.json.")) for name in synced)
    synced.clear()
    with atomic_dir(tmp_path / "model", durable=True) as staging:
        (staging / "model.keras").write_bytes(b"weights")
    assert any(name.endswith("/model.keras") for name in synced)
    assert synced[-1] == str(tmp_path)


def test_a_replaced_folder_never_goes_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "version").write_text("1")
    missing_after: list[str] = []
    real_replace, real_rename = os.replace, os.rename

    def watched(real):  # type: ignore[no-untyped-def]
        def call(source: object, destination: object) -> None:
            real(source, destination)
            if not target.exists():
                missing_after.append(f"{source} -> {destination}")

        return call

    monkeypatch.setattr(os, "replace", watched(real_replace))
    monkeypatch.setattr(os, "rename", watched(real_rename))
    with atomic_dir(target) as staging:
        (staging / "version").write_text("2")
    assert missing_after == []
    assert (target / "version").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replacing_a_folder_leaves_other_writers_folders_alone(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "version").write_text("1")
    # Another writer's folder in the middle of its own replacement, under the name the old
    # code used for every writer.
    other = tmp_path / ".model.old"
    other.mkdir()
    (other / "keep").write_text("another writer's")
    with atomic_dir(target) as staging:
        (staging / "version").write_text("2")
    assert (other / "keep").read_text() == "another writer's"
    assert (target / "version").read_text() == "2"


def test_replacing_without_an_atomic_exchange_uses_a_name_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    target = tmp_path / "model"
    for version in ("1", "2"):
        with atomic_dir(target) as staging:
            (staging / "version").write_text(version)
    assert (target / "version").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_write_leaves_the_target_untouched(tmp_path: Path) -> None:
    write_bytes(tmp_path / "f", b"old")
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "f") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert (tmp_path / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
