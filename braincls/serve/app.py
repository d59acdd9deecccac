"""The prediction service: a FastAPI application (``braincls serve`` runs it with uvicorn).

- ``GET /`` one self-contained page: upload a scan, see the image the model saw, P(tumour),
  the Grad-CAM overlay with an opacity slider, the model's version and test metrics, and the
  research-use notice;
- ``GET /healthz``: the service is up and which model answers;
- ``GET /api/model``: version, threshold, training data, test metrics, intended use;
- ``POST /api/predict``: multipart field ``file`` (PNG, JPEG or one DICOM instance; a DICOM
  series or NIfTI volumes as a ZIP, or one NIfTI volume), answered with JSON: ``probability``,
  ``predicted_class``, ``threshold``, ``model_version``, the Grad-CAM overlay (base64 PNG) and,
  for several images, one entry per image or slice.

Every upload is scored by :mod:`braincls.predict`, the code path of ``braincls predict`` and of
evaluation. Uploads are bounded in size and checked by content before anything reads them; each
request works in a temporary folder of its own, deleted when it is answered; answers and logs
carry no absolute path and no patient identifier. A bad upload is a 4xx answer with a JSON
``error`` code and ``detail``, never a crash: the service keeps serving.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from braincls.common.notices import INTENDED_USE
from braincls.predict.model import PredictError, ScoringModel
from braincls.serve.models import ModelHolder
from braincls.serve.uploads import DICOM, IMAGE, VOLUME, ZIP, Rejected, ZipLimits, sniff

logger = logging.getLogger(__name__)

MB = 1024 * 1024


class ServeConfig(BaseModel):
    """Settings of the prediction service (``braincls serve``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_root: Path = Field(
        default=Path("data"), description="Data root whose registry the champion comes from."
    )
    model_dir: Path | None = Field(
        default=None, description="Serve this model folder instead of following the champion."
    )
    version: str | None = Field(
        default=None, description="Serve this registry version instead of following the champion."
    )
    max_upload_bytes: int = Field(
        default=64 * MB, ge=1, description="Largest request body accepted (413 above)."
    )
    max_zip_members: int = Field(default=2000, ge=1, description="Most members a ZIP may hold.")
    max_unzipped_bytes: int = Field(
        default=512 * MB, ge=1, description="Most bytes a ZIP may unpack to."
    )
    max_compression_ratio: float = Field(
        default=200.0,
        gt=1,
        description="Largest compression ratio of a ZIP member over 1 MB (a ZIP bomb above).",
    )
    max_images: int = Field(
        default=2000, ge=1, description="Most images or slices one request may score."
    )
    gradcam: bool = Field(
        default=True, description="Explain the (highest-scoring) image with Grad-CAM by default."
    )
    temp_root: Path | None = Field(
        default=None,
        description="Where each request's temporary folder is made (default: the system's).",
    )

    @property
    def zip_limits(self) -> ZipLimits:
        """The ZIP limits."""
        return ZipLimits(self.max_zip_members, self.max_unzipped_bytes, self.max_compression_ratio)


# ------------------------------------------------------------------------------------------
# Size limit of the request body (pure ASGI, before anything parses it)


class _TooLarge(Exception):
    pass


def _json_body(status: int, code: str, detail: str) -> tuple[int, bytes]:
    import json

    return status, json.dumps({"error": code, "detail": detail}).encode()


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413: at once when Content-Length says so,
    else as soon as the streamed body passes the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the upload is larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send, detail)
                return
        received = 0
        started = False

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, detail)

    @staticmethod
    async def _refuse(send: Any, detail: str) -> None:
        status, body = _json_body(413, "too_large", detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------
# Scoring an upload


def _png_base64(array: np.ndarray) -> str:
    import cv2

    from braincls.data.preprocess import encode_png

    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return base64.b64encode(encode_png(array)).decode("ascii")


def _gradcam(holder: ModelHolder, model: ScoringModel, pixels: np.ndarray) -> dict[str, Any]:
    """The coloured Grad-CAM heatmap of the model input and their blend, as base64 PNGs."""
    from matplotlib import colormaps

    from braincls.model.gradcam import overlay_heatmap

    heatmap = holder.explainer(model).heatmaps(pixels[None, ..., None])[0]
    coloured = np.round(colormaps["jet"](heatmap)[..., :3] * 255).astype(np.uint8)
    return {
        "heatmap_png": _png_base64(coloured),
        "overlay_png": _png_base64(overlay_heatmap(pixels, heatmap, alpha=0.4)),
        "overlay_alpha": 0.4,
        "method": "Grad-CAM (last convolutional feature map, unmirrored view)",
    }


def _clean(text: Any, work: Path) -> Any:
    """``text`` without the request's temporary folder (answers carry no server paths)."""
    if not isinstance(text, str):
        return text
    return text.replace(str(work) + "/", "").replace(str(work), "upload")


class UploadScorer:
    """Scores one uploaded file in its request's folder (``work``)."""

    def __init__(self, holder: ModelHolder, config: ServeConfig) -> None:
        self.holder = holder
        self.config = config

    def __call__(self, upload: Path, filename: str, work: Path, gradcam: bool) -> dict[str, Any]:
        from braincls.predict.inputs import image_candidate, plan_dicom, plan_volume
        from braincls.predict.score import plan_paths

        started = time.perf_counter()
        with open(upload, "rb") as handle:
            head = handle.read(512)
        kind = sniff(head, filename)
        model = self.holder.current()
        names: dict[str, str] = {}
        inbox = work / "in"
        inbox.mkdir()
        if kind == IMAGE:
            candidates = [image_candidate(upload.read_bytes(), {"source_path": None}, model)]
            names = {}
        elif kind == DICOM:
            shutil.move(upload, inbox / "00000.dcm")
            names = {str(inbox / "00000.dcm"): Path(filename).name or "instance"}
            planned = plan_dicom(inbox, work / "converted", model, manifest_dir=work / "manifest")
            candidates = list(planned.candidates())
            if len(candidates) > 1:
                raise Rejected(
                    422,
                    "more_than_one_image",
                    f"the DICOM instance holds {len(candidates)} frames where one image is "
                    "expected; send a multi-frame instance or a series as a ZIP",
                )
        elif kind == VOLUME:
            gzipped = head[:2] == b"\x1f\x8b"
            volume = inbox / ("00000.nii.gz" if gzipped else "00000.nii")
            shutil.move(upload, volume)
            candidates = self._bounded(plan_volume(volume, model))
            names = {str(volume): "volume"}
        elif kind == ZIP:
            from braincls.serve.uploads import extract_zip

            names = extract_zip(upload, inbox, self.config.zip_limits)
            upload.unlink()
            if not names:
                raise Rejected(422, "empty_zip", "the ZIP holds no file")
            planned_sources = plan_paths([inbox], model, work / "converted", work)
            candidates = [c for source in planned_sources for c in self._bounded(source)]
            if len(candidates) > self.config.max_images:
                raise Rejected(413, "too_many_images", self._too_many(len(candidates)))
        else:  # pragma: no cover - sniff knows no other kind
            raise Rejected(415, "unsupported_type", kind)
        if not any(c.pixels is not None for c in candidates):
            first = candidates[0] if candidates else None
            reason = first.reason if first is not None and first.reason else "nothing_to_score"
            detail = first.detail if first is not None and first.detail else "no image to score"
            raise Rejected(422, reason, _clean(detail, work))
        return self._answer(model, kind, candidates, names, work, gradcam, filename, started)

    def _too_many(self, count: int) -> str:
        return f"{count} images or slices; one request scores at most {self.config.max_images}"

    def _bounded(self, source: Any) -> list[Any]:
        if source.count > self.config.max_images:
            raise Rejected(413, "too_many_images", self._too_many(source.count))
        return list(source.candidates())

    def _answer(
        self,
        model: ScoringModel,
        kind: str,
        candidates: list[Any],
        names: dict[str, str],
        work: Path,
        gradcam: bool,
        filename: str,
        started: float,
    ) -> dict[str, Any]:
        from braincls.predict.score import score_candidates

        with self.holder.inference_lock:
            scored = score_candidates(candidates, model, keep_pixels=True)
            rows = scored.rows
            probabilities = rows["p_tumour"].astype("float64").to_numpy()
            top = int(np.nanargmax(probabilities))
            explanation = (
                _gradcam(self.holder, model, scored.pixels[top])  # type: ignore[arg-type]
                if gradcam
                else None
            )
        series_numbers: dict[str, int] = {}
        images = []
        for index, row in enumerate(rows.itertuples(index=False)):
            uid = row.series_instance_uid
            series = None
            if isinstance(uid, str):
                series = series_numbers.setdefault(uid, len(series_numbers) + 1)
            path = row.source_path if isinstance(row.source_path, str) else None
            name = names.get(path, Path(path).name) if path else None
            if kind == IMAGE:
                name = Path(filename).name or "image"
            probability = None if np.isnan(probabilities[index]) else float(probabilities[index])
            images.append(
                {
                    "index": index,
                    "kind": row.kind if isinstance(row.kind, str) else None,
                    "name": name,
                    "series": series,
                    "slice_index": _optional_int(row.slice_index),
                    "frame_index": _optional_int(row.frame_index),
                    "probability": probability,
                    "predicted_class": row.predicted_class
                    if isinstance(row.predicted_class, str)
                    else None,
                    "reason": row.reason if isinstance(row.reason, str) else None,
                    "detail": _clean(row.detail, work) if isinstance(row.detail, str) else None,
                }
            )
        probability = float(probabilities[top])
        over = int(np.nansum(probabilities >= model.threshold))
        answer: dict[str, Any] = {
            "model_version": model.version,
            "threshold": model.threshold,
            "positive_class": model.positive_class,
            "upload_kind": kind,
            "probability": probability,
            "predicted_class": model.positive_class
            if probability >= model.threshold
            else model.negative_class,
            "n_images": len(rows),
            "n_scored": int(np.isfinite(probabilities).sum()),
            "n_over_threshold": over,
            "explained_index": top,
            "image_png": _png_base64(scored.pixels[top]),  # type: ignore[arg-type]
            "gradcam": explanation,
            "images": images,
            "intended_use": INTENDED_USE,
            "seconds": round(time.perf_counter() - started, 3),
        }
        return answer


def _optional_int(value: Any) -> int | None:
    """An integer cell, or None when it is missing (None, <NA>, NaN)."""
    import pandas as pd

    return None if value is None or bool(pd.isna(value)) else int(value)


# ------------------------------------------------------------------------------------------
# The application


def page_html() -> str:
    """The upload page (one self-contained HTML file: no CDN, no external request)."""
    return resources.files("braincls.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application; loads the model now (:class:`PredictError` if it cannot)."""
    holder = ModelHolder(config.data_root, config.model_dir, config.version)
    scorer = UploadScorer(holder, config)
    app = FastAPI(
        title="braincls prediction service",
        description=f"Brain MRI tumour / no-tumour slice classification. {INTENDED_USE}",
        version="1",
    )
    app.state.holder = holder
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)

    def error(status: int, code: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(
            page_html(),
            headers={
                "Content-Security-Policy": (
                    "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
                    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        model = holder.current()
        return {"status": "ok", "model_version": model.version}

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        return {**holder.current().describe(), "follows_champion": not holder.pinned}

    @app.post(
        "/api/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request, gradcam: bool | None = None) -> JSONResponse:
        """Score one upload (multipart field ``file``)."""
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return error(422, "missing_file", "send the scan as the multipart field 'file'")
            with tempfile.TemporaryDirectory(
                prefix="braincls-serve-", dir=config.temp_root
            ) as folder:
                work = Path(folder)
                target = work / "upload"
                with open(target, "wb") as out:
                    while chunk := await upload.read(1 << 20):
                        out.write(chunk)
                try:
                    answer = await run_in_threadpool(
                        scorer,
                        target,
                        upload.filename or "",
                        work,
                        config.gradcam if gradcam is None else gradcam,
                    )
                except Rejected as rejected:
                    logger.info("upload refused: %s", rejected.code)
                    return error(rejected.status, rejected.code, rejected.message)
                except PredictError as problem:
                    return error(503, "no_model", _clean(str(problem), work))
                except Exception as problem:  # nothing a client sends may stop the service
                    logger.error("upload failed: %s", type(problem).__name__)
                    return error(
                        500,
                        "internal_error",
                        f"the upload could not be scored ({type(problem).__name__}); "
                        "the service keeps running",
                    )
            logger.info(
                "scored %s upload: %d images, P=%.3f, %s",
                answer["upload_kind"],
                answer["n_images"],
                answer["probability"],
                answer["model_version"],
            )
            return JSONResponse(answer)
        finally:
            await form.close()

    return app


class RedactPaths(logging.Filter):
    """Replaces the given folders (temporary uploads, the data root) in log messages, so logs
    carry no absolute path."""

    def __init__(self, replacements: dict[str, str]) -> None:
        super().__init__()
        self.replacements = sorted(replacements.items(), key=lambda item: -len(item[0]))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for folder, name in self.replacements:
            message = message.replace(folder, name)
        record.msg, record.args = message, None
        return True


def run_server(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load the model and serve until interrupted (uvicorn, one process)."""
    import uvicorn

    app = create_app(config)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    handler.addFilter(
        RedactPaths(
            {
                str(Path(config.temp_root or tempfile.gettempdir()).resolve()): "<tmp>",
                str(Path(config.data_root).resolve()): "<data root>",
            }
        )
    )
    library = logging.getLogger("braincls")
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False
    model = app.state.holder.current()
    print(
        f"braincls serve: model {model.version} (threshold {model.threshold:.3f}) on "
        f"http://{host}:{port}/ ; {INTENDED_USE}",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
