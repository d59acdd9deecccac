"""What the dashboard shows carries no source paths, and the pseudonym salt can come from a
Prefect Secret block on the worker."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from braincls.config import ConvertConfig, ImportConfig


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (latest, *_) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(latest.data)


def test_the_import_summary_shows_no_source_paths(tmp_path: Path) -> None:
    from prefect import flow

    from tasks.data import import_images

    # A hospital export's folders carry names; the dashboard must not show them.
    images = tmp_path / "exports" / "Doe_Jane_1970" / "images"
    rng = np.random.default_rng(0)
    for label in ("no", "yes"):
        (images / label).mkdir(parents=True)
        for index in range(3):
            image = rng.integers(0, 255, (64, 64), dtype=np.uint8)
            cv2.imwrite(str(images / label / f"{index}.png"), image)
    (images / "yes" / "broken.png").write_bytes(b"not an image")

    @flow
    def import_only() -> None:
        import_images(str(images), str(tmp_path / "data"), ImportConfig())

    import_only()
    markdown = _artifact("import-summary")
    assert "yes/broken.png" in markdown  # the set-aside file, relative to the image folder
    assert str(tmp_path) not in markdown
    assert "Doe_Jane" not in markdown


def test_the_pseudonym_salt_can_come_from_a_secret_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    from tasks.convert import with_configured_salt

    Secret(value="salt-from-the-block").save("braincls-pseudonym-salt", overwrite=True)
    monkeypatch.setenv("BRAINCLS_PSEUDONYM_SALT", "salt-from-the-environment")
    monkeypatch.setenv("BRAINCLS_PSEUDONYM_SALT_BLOCK", "braincls-pseudonym-salt")
    config = with_configured_salt(ConvertConfig())
    assert config.pseudonym_salt.get_secret_value() == "salt-from-the-block"
    assert "salt-from" not in config.model_dump_json()
    monkeypatch.delenv("BRAINCLS_PSEUDONYM_SALT_BLOCK")
    assert with_configured_salt(ConvertConfig()).pseudonym_salt.get_secret_value() == (
        "salt-from-the-environment"
    )
