"""Converting one DICOM file into temporary PNGs: the work a worker process does.

:mod:`braincls.convert.series` turns the outcomes into a series' folder. The fingerprint is
:func:`braincls.data.images.perceptual_hash`, the one the image-folder source uses, so fingerprints
of both sources compare; a change there must bump ``CONVERTER_VERSION``.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from braincls.common.hashing import sha256_bytes
from braincls.config import ConvertConfig
from braincls.convert import pixels
from braincls.convert.reading import (
    FrameAttributes,
    Lut,
    Reason,
    SetAside,
    check_decodable,
    check_native_length,
    collection_name,
    decimals,
    frame_attributes,
    has_pixel_data,
    non_image_reason,
    number_of_frames,
    parse_dataset,
    peek_series_instance_uid,
    pseudonymize,
    read_bytes,
    read_lut,
    safe_uid,
    segmentation_kind,
    text_value,
    transfer_syntax,
    unwrap_gzip,
)
from braincls.data.fingerprint import perceptual_hash

logger = logging.getLogger(__name__)

#: Side of the thumbnails used for background-slice selection.
THUMBNAIL_SIDE_PX = 32


# --------------------------------------------------------------------------------------------
# The pixel pipeline of one frame


@dataclass(frozen=True)
class RenderedFrame:
    """A frame after the grayscale pipeline, at native size.

    ``display`` holds 0..255 display values (tissue bright); ``values`` holds the modality-LUT
    output, inverted within the frame's range for MONOCHROME1 so that tissue is high there too.
    """

    display: NDArray[np.float64]
    values: NDArray[np.float64]
    window_source: str


def render_frame(
    stored: NDArray[np.generic],
    attributes: FrameAttributes,
    *,
    photometric: str,
    config: ConvertConfig,
    modality_lut: Lut | None = None,
    voi_lut: Lut | None = None,
) -> RenderedFrame:
    """Apply the grayscale pipeline of PS3.4 N.2 to one frame of stored values.

    1. Modality LUT: the (0028,3000) Modality LUT Sequence, else (0028,1053) Rescale Slope and
       (0028,1052) Rescale Intercept, else the stored values.
    2. VOI LUT (when ``config.window_source`` is ``file``): the first (0028,3010) VOI LUT
       Sequence item, else the first (0028,1050) Window Center / (0028,1051) Window Width pair
       with (0028,1056) VOI LUT Function; a window the standard forbids (width < 1) and every
       file without VOI values fall back to the percentile window.
    3. (0028,0004) MONOCHROME1 is inverted.
    """
    if np.asarray(stored).dtype.kind == "f" and not np.isfinite(stored).all():
        # Float Pixel Data may hold NaN or infinities; they carry no intensity.
        stored = np.nan_to_num(stored, nan=0.0, posinf=0.0, neginf=0.0)
    if modality_lut is not None:
        values = pixels.apply_lut(stored, modality_lut.table, modality_lut.first_mapped)
    elif attributes.rescale_slope is not None and attributes.rescale_intercept is not None:
        values = pixels.apply_rescale(
            stored, attributes.rescale_slope, attributes.rescale_intercept
        )
    else:
        values = np.asarray(stored, dtype=np.float64)

    display: NDArray[np.float64] | None = None
    source = "percentile"
    if config.window_source == "file":
        if voi_lut is not None:
            mapped = pixels.apply_lut(values, voi_lut.table, voi_lut.first_mapped)
            display = pixels.scale_lut_output(mapped, voi_lut.bits_per_entry)
            source = "voi_lut_sequence"
        elif attributes.window_centers and attributes.window_widths:
            try:
                display = pixels.apply_window(
                    values,
                    attributes.window_centers[0],
                    attributes.window_widths[0],
                    function=attributes.voi_function,
                )
                source = "window"
            except pixels.WindowError as error:
                logger.debug("window ignored, using the percentile window: %s", error)
    if display is None:
        display = pixels.percentile_window(values, config.percentile_low, config.percentile_high)

    if photometric == "MONOCHROME1":
        display = pixels.invert(display)
        finite = values[np.isfinite(values)]
        if finite.size:
            values = float(finite.max()) + float(finite.min()) - values
    return RenderedFrame(display=display, values=values, window_source=source)


# --------------------------------------------------------------------------------------------
# Converting files (runs in worker processes)


@dataclass
class FrameOutcome:
    """One converted frame: its temporary PNG(s) in the work folder and what the manifest needs."""

    frame_index: int
    temp_name: str
    temp_native_name: str | None
    width: int
    height: int
    sha256: str
    fingerprint: str
    slice_position: float
    pixel_spacing_mm: tuple[float, float] | None
    #: (0020,0032) and (0020,0037) of the frame, backslash-joined decimals (None if absent).
    image_position: str | None
    image_orientation: str | None
    window_source: str
    intensity_mean: float
    intensity_std: float
    intensity_min: int
    intensity_max: int
    thumbnail: NDArray[np.float32]


@dataclass
class FileOutcome:
    """The result of one file, small enough to send from a worker to the parent."""

    file_index: int
    reason: Reason | None = None
    detail: str = ""
    header: dict[str, str | None] = field(default_factory=dict)
    rows: int = 0
    cols: int = 0
    frames: list[FrameOutcome] = field(default_factory=list)


def _header(dataset: Dataset, config: ConvertConfig) -> dict[str, str | None]:
    """The identifiers kept from a header (never PatientName, PatientBirthDate and the like)."""
    patient = text_value(dataset, "PatientID")
    if patient is not None and config.pseudonymize_patient_id:
        patient = pseudonymize(patient, config.pseudonym_salt.get_secret_value())
    return {
        "sop_instance_uid": safe_uid(dataset.get("SOPInstanceUID")),
        "series_instance_uid": safe_uid(dataset.get("SeriesInstanceUID")),
        "study_instance_uid": safe_uid(dataset.get("StudyInstanceUID")),
        "patient_id": patient,
        "modality": (text_value(dataset, "Modality") or "").upper() or None,
        "collection_header": collection_name(dataset),
        "frame_of_reference_uid": safe_uid(dataset.get("FrameOfReferenceUID")),
    }


def _decode_reason(error: Exception) -> Reason:
    """Truncated data and other decoder failures read alike; the message tells them apart."""
    message = str(error).lower()
    truncated = ("less than expected", "truncated", "too short", "insufficient", "end of")
    return (
        Reason.TRUNCATED_PIXEL_DATA
        if any(word in message for word in truncated)
        else (Reason.DECODE_ERROR)
    )


def _encode_png(image: NDArray[np.uint8] | NDArray[np.uint16]) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise SetAside(Reason.DECODE_ERROR, f"PNG encoding failed for a {image.shape} image")
    return buffer.tobytes()


def _convert_object(
    dataset: Dataset, outcome: FileOutcome, work_dir: Path, config: ConvertConfig
) -> None:
    """Check one image object, then render and write each of its frames (temporary names)."""
    header = outcome.header
    kind = segmentation_kind(dataset)
    if kind is not None:
        # Not an image to train on, but the source of labels: the assembly reads it.
        raise SetAside(Reason.SEGMENTATION, f"{kind}: a segmentation, read for slice labels")
    non_image = non_image_reason(dataset)
    if non_image is not None:
        raise SetAside(Reason.NON_IMAGE_OBJECT, f"{non_image} holds no image to train on")
    wanted = config.modality.strip().upper()
    if wanted and header["modality"] != wanted:
        found = header["modality"] or "missing"
        raise SetAside(
            Reason.OTHER_MODALITY, f"(0008,0060) Modality is {found}; converting {wanted} only"
        )
    if not has_pixel_data(dataset):
        raise SetAside(Reason.NO_PIXEL_DATA, "no (7FE0,0010) Pixel Data element")
    if header["sop_instance_uid"] is None:
        raise SetAside(Reason.INVALID_DICOM, "no valid (0008,0018) SOP Instance UID")
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise SetAside(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"(0028,0004) Photometric Interpretation {photometric or 'missing'} with "
            f"{samples} samples per pixel; only MONOCHROME1/2 grayscale is converted",
        )
    syntax = transfer_syntax(dataset)
    if "PixelData" in dataset:
        check_decodable(syntax)
        check_native_length(dataset, syntax)
    outcome.rows = int(dataset.Rows)
    outcome.cols = int(dataset.Columns)
    if outcome.rows < 1 or outcome.cols < 1:
        raise SetAside(Reason.INVALID_DICOM, f"image is {outcome.rows}x{outcome.cols} pixels")

    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    little_endian = not syntax.is_transfer_syntax or bool(syntax.is_little_endian)
    modality_sequence = dataset.get("ModalityLUTSequence")
    voi_sequence = dataset.get("VOILUTSequence")
    modality_lut = (
        read_lut(modality_sequence[0], signed_input=signed, little_endian=little_endian)
        if modality_sequence
        else None
    )
    voi_lut = (
        read_lut(voi_sequence[0], signed_input=signed, little_endian=little_endian)
        if voi_sequence
        else None
    )

    frame_count = number_of_frames(dataset)
    size = config.image_size_px
    for frame_index in range(frame_count):
        try:
            stored = pixel_array(dataset, index=frame_index if frame_count > 1 else None)
        except SetAside:
            raise
        except Exception as error:
            raise SetAside(_decode_reason(error), f"frame {frame_index}: {error}") from error
        if stored.size != outcome.rows * outcome.cols:
            raise SetAside(
                Reason.DECODE_ERROR,
                f"frame {frame_index} decoded to shape {stored.shape}, "
                f"expected {outcome.rows}x{outcome.cols}",
            )
        stored = stored.reshape(outcome.rows, outcome.cols)
        attributes = frame_attributes(dataset, frame_index)
        rendered = render_frame(
            stored,
            attributes,
            photometric=photometric,
            config=config,
            modality_lut=modality_lut,
            voi_lut=voi_lut,
        )
        square = pixels.resize_to_square(
            rendered.display,
            size,
            pixel_spacing_mm=attributes.pixel_spacing_mm,
            keep_aspect=config.keep_aspect,
        )
        image = pixels.to_uint8(square)
        png = _encode_png(image)
        temp_name = f".{outcome.file_index}.{frame_index}.png"
        (work_dir / temp_name).write_bytes(png)
        native_name = None
        if config.write_native_16bit:
            native_name = f".{outcome.file_index}.{frame_index}.native.png"
            (work_dir / native_name).write_bytes(_encode_png(pixels.to_uint16(rendered.values)))
        mean, std = cv2.meanStdDev(image)
        low, high, _, _ = cv2.minMaxLoc(image)
        outcome.frames.append(
            FrameOutcome(
                frame_index=frame_index,
                temp_name=temp_name,
                temp_native_name=native_name,
                width=int(image.shape[1]),
                height=int(image.shape[0]),
                sha256=sha256_bytes(png),
                fingerprint=f"{perceptual_hash(image):016x}",
                slice_position=attributes.slice_position,
                pixel_spacing_mm=attributes.pixel_spacing_mm,
                image_position=decimals(attributes.image_position),
                image_orientation=decimals(attributes.image_orientation),
                window_source=rendered.window_source,
                intensity_mean=float(mean[0][0]),
                intensity_std=float(std[0][0]),
                intensity_min=int(low),
                intensity_max=int(high),
                thumbnail=pixels.thumbnail(rendered.values, THUMBNAIL_SIDE_PX),
            )
        )


def convert_file(path: Path, file_index: int, work_dir: Path, config: ConvertConfig) -> FileOutcome:
    """Convert one file into temporary PNGs in ``work_dir``; problems become a set-aside outcome.

    Never raises for a problem of the file itself.
    """
    outcome = FileOutcome(file_index=file_index)
    try:
        with warnings.catch_warnings():
            # pydicom warns about recoverable header oddities (padding, VR mismatches); they
            # would flood the log of a collection run and change no output.
            warnings.simplefilter("ignore")
            dataset = parse_dataset(unwrap_gzip(read_bytes(path)))
            try:
                outcome.header = _header(dataset, config)
            except Exception as error:
                raise SetAside(Reason.INVALID_DICOM, f"header value invalid: {error}") from error
            try:
                _convert_object(dataset, outcome, work_dir, config)
            except SetAside:
                raise
            except (MemoryError, OSError):
                raise
            except Exception as error:
                raise SetAside(Reason.INVALID_DICOM, f"{type(error).__name__}: {error}") from error
    except SetAside as aside:
        for frame in outcome.frames:
            (work_dir / frame.temp_name).unlink(missing_ok=True)
            if frame.temp_native_name:
                (work_dir / frame.temp_native_name).unlink(missing_ok=True)
        outcome.frames = []
        outcome.reason = aside.reason
        outcome.detail = aside.detail
        logger.debug("set aside %s: %s", path, aside)
    return outcome


def convert_files(
    files: Sequence[tuple[int, Path]], work_dir: Path, config: ConvertConfig
) -> list[FileOutcome]:
    """Convert ``(file_index, path)`` pairs into ``work_dir`` (the unit of work of a process)."""
    return [convert_file(path, index, Path(work_dir), config) for index, path in files]


def scan_file(path: Path) -> tuple[str, str | None]:
    """MD5 of a file and its (0020,000E) Series Instance UID (None when it has no valid one).

    The file is read once; the UID comes from :func:`peek_series_instance_uid`, or from a
    pydicom header read (without pixel data) where that fast path is unsure.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ("", None)
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    try:
        data = unwrap_gzip(data)
        uid = peek_series_instance_uid(data)
        if uid is None:
            dataset = parse_dataset(data, stop_before_pixels=True)
            uid = safe_uid(dataset.get("SeriesInstanceUID"))
    except Exception:  # damaged or not DICOM: the file is converted (and set aside) on its own
        uid = None
    return (md5, uid)
