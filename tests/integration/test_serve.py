"""The prediction service through its HTTP API (FastAPI's test client): what it answers, every
bad upload a 4xx with a JSON reason while the service keeps serving, no path or patient
identifier in an answer, temporary folders removed, a promotion picked up without a restart."""

from __future__ import annotations

import base64
import io
import logging
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import pytest
from dicom_builders import PATIENT_ID, make_series
from fake_models import register_fake_version
from pydicom.uid import generate_uid

from braincls.data.preprocess import encode_png

PATIENT_NAME = "Test^Patient"


def _brain(index: int) -> np.ndarray:
    """A 32x32 slice: a bright disc with a darker core that moves with the slice."""
    y, x = np.mgrid[:32, :32]
    image = np.where((x - 16) ** 2 + (y - 16) ** 2 < 120, 900, 40).astype(np.uint16)
    image[(x - 12 - index) ** 2 + (y - 14) ** 2 < 10] = 400
    return image


def _dicom_bytes(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _series(count: int = 6) -> list[Any]:
    return make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        pixels=_brain,
        count=count,
    )


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def _phantom_png(seed: int = 0) -> bytes:
    generator = np.random.default_rng(seed)
    y, x = np.mgrid[:96, :96]
    head = ((x - 48) ** 2 + (y - 48) ** 2 < 40**2).astype(np.float64)
    image = head * (120 + 60 * generator.random((96, 96)))
    image[(x - 40) ** 2 + (y - 50) ** 2 < 64] = 250
    return encode_png(np.clip(image, 0, 255).astype(np.uint8))


def _volume_bytes() -> bytes:
    shape = (40, 40, 12)
    x, y = np.mgrid[: shape[0], : shape[1]]
    head = (x - 20) ** 2 + (y - 20) ** 2 <= 15**2
    image = np.zeros(shape, np.int16)
    generator = np.random.default_rng(0)
    for z in range(2, 10):
        image[..., z][head] = 300 + generator.integers(0, 200, head.sum())
    buffer = io.BytesIO()
    nifti = nib.Nifti1Image(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    buffer.write(nifti.to_bytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from braincls.serve.app import ServeConfig, create_app

    base = tmp_path_factory.mktemp("serve")
    root = base / "data"
    register_fake_version(root, image_size_px=32, seed=1, threshold=0.5)
    temp_root = base / "tmp"
    temp_root.mkdir()
    config = ServeConfig(
        data_root=root,
        max_upload_bytes=2 * 1024 * 1024,
        max_zip_members=20,
        max_unzipped_bytes=4 * 1024 * 1024,
        max_images=12,
        temp_root=temp_root,
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        client.temp_root = temp_root  # type: ignore[attr-defined]
        client.data_root = root  # type: ignore[attr-defined]
        yield client


def _post(client: Any, data: bytes, name: str = "upload", **params: Any) -> Any:
    return client.post("/api/predict", files={"file": (name, data)}, params=params)


def _no_secrets(text: str, client: Any) -> None:
    """No absolute server path and no patient identifier in an answer."""
    assert str(client.data_root) not in text
    assert str(client.temp_root) not in text
    assert "/tmp/" not in text
    assert PATIENT_NAME not in text
    assert PATIENT_ID not in text


def test_health_and_model_description(service: Any) -> None:
    health = service.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model_version": "v0001"}
    model = service.get("/api/model")
    assert model.status_code == 200
    described = model.json()
    assert described["model_version"] == "v0001"
    assert described["threshold"] == 0.5
    assert described["follows_champion"] is True
    assert described["training_data"]["sources"] == [{"name": "images", "kind": "images"}]
    assert described["test_metrics"]["roc_auc"] == {"value": 0.8, "interval_95": [0.6, 0.95]}
    assert described["intended_use"].startswith("Research use only.")
    _no_secrets(model.text, service)


def test_a_png_is_scored_as_predict_scores_it_with_a_gradcam_overlay(
    service: Any, tmp_path: Path
) -> None:
    from braincls.predict.model import open_model, resolve_model_dir
    from braincls.predict.score import predict_paths

    data = _phantom_png()
    answer = _post(service, data, "slice.png")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (tmp_path / "slice.png").write_bytes(data)
    root = service.data_root
    expected = predict_paths(
        [tmp_path / "slice.png"], open_model(resolve_model_dir(root), root), tmp_path / "c"
    ).predictions
    assert body["probability"] == float(expected["p_tumour"][0])
    assert body["predicted_class"] == expected["predicted_class"][0]
    assert (body["threshold"], body["model_version"]) == (0.5, "v0001")
    assert body["upload_kind"] == "image"
    assert body["n_images"] == 1
    assert body["intended_use"].startswith("Research use only.")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(body["image_png"]), np.uint8), -1)
    assert image.shape == (32, 32)
    for key in ("heatmap_png", "overlay_png"):
        picture = base64.b64decode(body["gradcam"][key])
        assert cv2.imdecode(np.frombuffer(picture, np.uint8), -1).shape == (32, 32, 3)
    without = _post(service, data, "slice.png", gradcam="false")
    assert without.status_code == 200
    assert without.json()["gradcam"] is None
    assert without.json()["probability"] == body["probability"]
    # A JPEG is an image too.
    ok, jpeg = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(data, np.uint8), -1))
    assert ok
    assert _post(service, jpeg.tobytes(), "slice.jpg").status_code == 200


def test_one_dicom_instance_and_a_zipped_series(service: Any, caplog: Any) -> None:
    series = _series()
    single = _post(service, _dicom_bytes(series[2]), "IM0003")
    assert single.status_code == 200, single.text
    assert single.json()["upload_kind"] == "dicom"
    assert single.json()["n_images"] == 1
    _no_secrets(single.text, service)

    members = {f"patient/study/IM{i:04d}.dcm": _dicom_bytes(ds) for i, ds in enumerate(series)}
    members["patient/notes.txt"] = b"side file"
    with caplog.at_level(logging.INFO, logger="braincls.serve"):
        zipped = _post(service, _zip(members), "series.zip")
    assert zipped.status_code == 200, zipped.text
    body = zipped.json()
    assert body["upload_kind"] == "zip"
    assert body["n_images"] == body["n_scored"] == 6
    assert {image["series"] for image in body["images"]} == {1}
    assert sorted(image["slice_index"] for image in body["images"]) == list(range(6))
    assert body["probability"] == max(image["probability"] for image in body["images"])
    assert body["images"][body["explained_index"]]["probability"] == body["probability"]
    _no_secrets(zipped.text, service)
    for uid in (series[0].SeriesInstanceUID, series[0].SOPInstanceUID):
        assert uid not in zipped.text
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "scored zip upload: 6 images" in logged
    assert PATIENT_NAME not in logged
    assert PATIENT_ID not in logged


def test_a_nifti_volume_alone_or_zipped(service: Any) -> None:
    volume = _volume_bytes()
    alone = _post(service, volume, "head.nii")
    assert alone.status_code == 200, alone.text
    body = alone.json()
    assert body["upload_kind"] == "volume"
    assert body["n_images"] == 12
    reasons = {image["reason"] for image in body["images"]}
    assert reasons == {None, "no_brain"}
    zipped = _post(service, _zip({"case/head.nii": volume}), "volume.zip")
    assert zipped.status_code == 200, zipped.text
    assert [i["probability"] for i in zipped.json()["images"]] == [
        i["probability"] for i in body["images"]
    ]


def _big_zip() -> bytes:
    """4.5 MB unpacked from about 1.3 MB: over the unpacked limit, under the upload limit and
    the compression-ratio limit (four symbols: about 2 bits a byte)."""
    generator = np.random.default_rng(0)
    return _zip(
        {f"{i}.bin": generator.integers(0, 4, 900_000, dtype=np.uint8).tobytes() for i in range(5)}
    )


def _multiframe() -> bytes:
    ds = _series(1)[0]
    ds.set_pixel_data(np.stack([_brain(i) for i in range(3)]), "MONOCHROME2", 12)
    return _dicom_bytes(ds)


def _no_pixels() -> bytes:
    ds = _series(1)[0]
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored"):
        if keyword in ds:
            delattr(ds, keyword)
    return _dicom_bytes(ds)


BAD_UPLOADS: list[tuple[str, Any, str, int, str]] = [
    ("text", lambda: b"hello, not an image at all" * 20, "notes.txt", 415, "unsupported_type"),
    ("empty", lambda: b"", "empty.png", 400, "empty_file"),
    ("broken png", lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 400, "x.png", 422, "not_an_image"),
    (
        "constant png",
        lambda: encode_png(np.full((64, 64), 90, np.uint8)),
        "c.png",
        422,
        "constant_image",
    ),
    ("tiny png", lambda: encode_png(np.eye(8, dtype=np.uint8) * 200), "t.png", 422, "too_small"),
    (
        "too large",
        lambda: b"\x89PNG\r\n\x1a\n" + b"\x01" * (3 * 1024 * 1024),
        "big.png",
        413,
        "too_large",
    ),
    ("dicom without pixel data", _no_pixels, "IM1", 422, "no_pixel_data"),
    ("multi-frame where one image is expected", _multiframe, "IM2", 422, "more_than_one_image"),
    ("zip slip", lambda: _zip({"../../evil.dcm": b"x"}), "a.zip", 400, "unsafe_zip"),
    ("absolute zip member", lambda: _zip({"/etc/evil": b"x"}), "a.zip", 400, "unsafe_zip"),
    (
        "zip with a symlink",
        lambda: _zip({"a.png": b"x"}, {"link": "/etc/passwd"}),
        "a.zip",
        400,
        "unsafe_zip",
    ),
    (
        "zip bomb",
        lambda: _zip({"zeros.dcm": b"\x00" * (3 * 1024 * 1024)}),
        "b.zip",
        413,
        "zip_bomb",
    ),
    (
        "zip too large",
        _big_zip,
        "c.zip",
        413,
        "zip_too_large",
    ),
    (
        "too many members",
        lambda: _zip({f"{i}.txt": b"x" for i in range(25)}),
        "m.zip",
        413,
        "too_many_files",
    ),
    ("damaged zip", lambda: b"PK\x03\x04" + b"\x07" * 500, "d.zip", 400, "bad_zip"),
    ("empty zip", lambda: _zip({}), "e.zip", 422, "empty_zip"),
    (
        "zip of more images than allowed",
        lambda: _zip({f"{i}.png": _phantom_png(i) for i in range(13)}),
        "n.zip",
        413,
        "too_many_images",
    ),
    (
        "zip of nothing scorable",
        lambda: _zip({"readme.bin": b"just bytes" * 50}),
        "r.zip",
        422,
        "not_dicom",
    ),
    ("broken nifti", lambda: b"\x1f\x8b\x08" + b"\x00" * 400, "v.nii.gz", 422, "unreadable_volume"),
]


@pytest.mark.parametrize(
    ("what", "make", "name", "status", "code"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS]
)
def test_bad_uploads_answer_4xx_with_the_reason_and_the_service_keeps_serving(
    service: Any, what: str, make: Any, name: str, status: int, code: str
) -> None:
    answer = _post(service, make(), name)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code, body
    assert body["detail"]
    _no_secrets(answer.text, service)
    assert service.get("/healthz").status_code == 200
    # Nothing is left behind in the temporary folder, and nothing was written outside it.
    assert list(service.temp_root.iterdir()) == []
    assert not (service.temp_root.parent / "evil.dcm").exists()


def test_malformed_requests(service: Any) -> None:
    missing = service.post("/api/predict", data={"other": "x"})
    assert missing.status_code == 422
    assert missing.json()["error"] == "missing_file"
    two = service.post(
        "/api/predict",
        files=[("file", ("a.png", _phantom_png())), ("file", ("b.png", _phantom_png(1)))],
    )
    assert two.status_code == 400
    assert "Too many files" in two.json()["detail"]
    not_found = service.get("/api/nothing")
    assert (not_found.status_code, not_found.json()["error"]) == (404, "not_found")
    assert service.get("/healthz").status_code == 200


def test_the_page_is_self_contained(service: Any) -> None:
    page = service.get("/")
    assert page.status_code == 200
    html = page.text
    assert "Research use only" in html
    assert 'type="range"' in html and 'id="opacity"' in html
    # Nothing is loaded from elsewhere: no external scripts, styles, fonts or images.
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_promotion_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from braincls.registry.store import ModelRegistry
    from braincls.serve.app import ServeConfig, create_app

    root = tmp_path / "data"
    register_fake_version(root, image_size_px=32, seed=1, threshold=0.5)
    register_fake_version(root, image_size_px=32, seed=2, threshold=0.25, promote=False)
    registry = ModelRegistry(root / "models")
    image = _phantom_png()
    with TestClient(create_app(ServeConfig(data_root=root))) as client:
        first = _post(client, image, "a.png").json()
        assert (first["model_version"], first["threshold"]) == ("v0001", 0.5)
        registry.promote("v0002")
        assert client.get("/healthz").json()["model_version"] == "v0002"
        second = _post(client, image, "a.png").json()
        assert (second["model_version"], second["threshold"]) == ("v0002", 0.25)
        assert second["probability"] != first["probability"]  # another model's weights
        registry.rollback()
        assert _post(client, image, "a.png").json()["model_version"] == "v0001"
    # Pinned to a version, it stays there.
    with TestClient(create_app(ServeConfig(data_root=root, version="v0002"))) as pinned:
        registry.promote("v0001")
        assert pinned.get("/api/model").json()["model_version"] == "v0002"
        assert pinned.get("/api/model").json()["follows_champion"] is False


def test_log_lines_carry_no_server_paths() -> None:
    from braincls.serve.app import RedactPaths

    record = logging.LogRecord(
        "braincls.convert.tree",
        logging.INFO,
        __file__,
        1,
        "%s: %d files",
        ("/srv/tmp/x/in", 3),
        None,
    )
    RedactPaths({"/srv/tmp": "<tmp>", "/srv/data": "<data root>"}).filter(record)
    assert record.getMessage() == "<tmp>/x/in: 3 files"


def test_the_service_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    from braincls.predict.model import NoChampion
    from braincls.serve.app import ServeConfig, create_app

    with pytest.raises(NoChampion):
        create_app(ServeConfig(data_root=tmp_path))
