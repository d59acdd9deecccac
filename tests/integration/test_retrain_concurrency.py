"""One retraining at a time, whichever deployment (or command) starts it."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest


def test_a_retraining_waits_for_the_one_running(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from flows.retrain import RETRAIN_LIMIT, retrain_flow

    (tmp_path / "labels.csv").write_text("PatientID,label\nP1,yes\n")
    errors: list[BaseException] = []

    def retrain() -> None:
        try:
            retrain_flow(collections=["Absent"], data_root=str(tmp_path), skip_ingest=True)
        except BaseException as error:  # the run ends on the missing DICOM, once it may start
            errors.append(error)

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(RETRAIN_LIMIT, 1)
    with concurrency(RETRAIN_LIMIT, occupy=1, strict=True):  # another retraining is running
        waiting = threading.Thread(target=retrain)
        waiting.start()
        time.sleep(8)
        assert waiting.is_alive(), f"the retraining did not wait: {errors}"
        assert errors == []
    waiting.join(timeout=120)
    assert not waiting.is_alive()
    assert len(errors) == 1
    with pytest.raises(FileNotFoundError, match="no verified DICOM for"):
        raise errors[0]


def test_the_retraining_limit_is_created_where_it_is_missing(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.retrain import RETRAIN_LIMIT, retrain_flow

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_global_concurrency_limit_by_name(RETRAIN_LIMIT)
    (tmp_path / "labels.csv").write_text("PatientID,label\nP1,yes\n")
    with pytest.raises(FileNotFoundError, match="no verified DICOM for"):
        retrain_flow(collections=["Absent"], data_root=str(tmp_path), skip_ingest=True)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(RETRAIN_LIMIT)
    assert (limit.limit, limit.active, limit.active_slots) == (1, True, 0)


def test_a_retraining_without_collections_takes_those_already_ingested(tmp_path: Path) -> None:
    from flows.retrain import retrain_flow

    (tmp_path / "labels.csv").write_text("PatientID,label\nP1,yes\n")
    with pytest.raises(ValueError, match=r"nothing to retrain on: no collection has been ingested"):
        retrain_flow(data_root=str(tmp_path), skip_ingest=True)
