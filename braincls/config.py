"""The one configuration tree of braincls.

Every stage reads one section of :class:`PipelineConfig`; each task receives only the section it
needs so that its cache key stays narrow. Machine-specific values (data root, TCIA URL) come from
:class:`Settings`, which reads ``BRAINCLS_*`` environment variables.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from braincls.common.hashing import stable_hash

DEFAULT_TCIA_BASE_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v4/"
#: (0008,0060) Modality of DICOM data unless configured otherwise (ConvertConfig.modality).
DEFAULT_MODALITY = "MR"


class Settings(BaseSettings):
    """Machine-specific settings, read from ``BRAINCLS_`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BRAINCLS_", extra="ignore")

    data_root: Path = Field(
        default=Path("data"),
        description="Root folder for raw DICOM, images, manifests, models and reports.",
    )
    tcia_base_url: str = Field(
        default=DEFAULT_TCIA_BASE_URL,
        description="Base URL of the NBIA v4 API (TCIA, or the local stand-in server).",
    )
    allowed_data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=(
            "Data roots a deployment run on this worker may use (BRAINCLS_ALLOWED_DATA_ROOTS, "
            "comma-separated; a root's subfolders included). Empty: data_root only. A run's "
            "parameters (and the event payload that starts retrain-on-ingest) are chosen by "
            "whoever can reach the Prefect server, so the worker decides where it writes."
        ),
    )
    allowed_tcia_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "NBIA API base URLs a deployment run on this worker may talk to "
            "(BRAINCLS_ALLOWED_TCIA_BASE_URLS, comma-separated). Empty: tcia_base_url only."
        ),
    )
    pseudonym_salt: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Secret key of the Patient ID pseudonyms (BRAINCLS_PSEUDONYM_SALT): a long random "
            "string, kept fixed (a new one gives new pseudonyms). Never a flow parameter."
        ),
    )
    pseudonym_salt_block: str | None = Field(
        default=None,
        description=(
            "Name of a Prefect Secret block holding the pseudonym salt "
            "(BRAINCLS_PSEUDONYM_SALT_BLOCK); read by the conversion tasks on the worker, "
            "and used instead of pseudonym_salt."
        ),
    )

    @field_validator("allowed_data_roots", "allowed_tcia_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def trusted_data_roots(self) -> list[Path]:
        """The data roots deployment runs may use, resolved."""
        return [Path(root).resolve() for root in (self.allowed_data_roots or [self.data_root])]

    def trusted_base_urls(self) -> list[str]:
        """The NBIA API base URLs deployment runs may use, without trailing slashes."""
        return [url.rstrip("/") for url in (self.allowed_tcia_base_urls or [self.tcia_base_url])]


class UntrustedLocation(ValueError):
    """A run asked for a data root or an API URL this machine does not allow."""


def check_run_location(settings: Settings, data_root: str | Path, base_url: str | None) -> None:
    """Raise :class:`UntrustedLocation` unless ``data_root`` lies in an allowed data root and
    ``base_url`` (when given) is an allowed NBIA API URL of ``settings``."""
    root = Path(data_root).resolve()
    allowed = settings.trusted_data_roots()
    if not any(root == trusted or trusted in root.parents for trusted in allowed):
        raise UntrustedLocation(
            f"data_root {root} is not an allowed data root on this worker (allowed: "
            f"{', '.join(map(str, allowed))}); a run's parameters come from whoever can reach "
            "the Prefect server, so the worker only writes where it is told to by its own "
            "BRAINCLS_ALLOWED_DATA_ROOTS (comma-separated) or BRAINCLS_DATA_ROOT"
        )
    if base_url is not None and base_url.rstrip("/") not in settings.trusted_base_urls():
        raise UntrustedLocation(
            f"base_url {base_url} is not an allowed NBIA API on this worker (allowed: "
            f"{', '.join(settings.trusted_base_urls())}); add it to the worker's "
            "BRAINCLS_ALLOWED_TCIA_BASE_URLS (comma-separated) or BRAINCLS_TCIA_BASE_URL"
        )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def config_hash(self) -> str:
        """SHA-256 of the section's canonical JSON: the section's part of a cache key."""
        return stable_hash(self.model_dump(mode="json"))


class ImportConfig(_Section):
    """How a class-per-folder image set becomes a manifest."""

    extensions: tuple[str, ...] = Field(
        default=(".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"),
        description="File extensions (lower case) taken as images; other files are quarantined.",
    )
    min_side_px: int = Field(
        default=16, ge=1, description="Images with a side shorter than this are quarantined."
    )
    near_duplicate_min_local_agreement: float = Field(
        default=0.965,
        gt=0,
        le=1,
        description=(
            "Two images are copies of one slice (same group) when, after registering one onto "
            "the other and matching their histograms, their correlation in small windows is at "
            "least this at the windows' 5th percentile. Copies reach 0.98 or more; slices of "
            "one head 2 mm or more apart stay below (measured on BraTS, see the README)."
        ),
    )
    near_duplicate_min_overlap_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="...and their heads overlap by at least this fraction after registration.",
    )


class LabelRuleConfig(_Section):
    """How a tumour segmentation labels a slice (DICOM SEG, RTSTRUCT or a NIfTI mask).

    A slice is tumour (``yes``) when the selected segments cover at least
    ``min_tumour_area_mm2`` on it, tumour-free (``no``) when they cover nothing and the brain
    (the image's foreground) covers at least ``min_brain_area_mm2``, and set aside in between
    (``ambiguous_tumour_area``: thin slivers at the top and bottom of a tumour) or when there is
    too little brain (``no_brain``). Areas are in mm², so the rule does not depend on
    pixel spacing. A labels table, where it labels an image, overrides the rule.
    """

    min_tumour_area_mm2: float = Field(
        default=100.0,
        ge=0,
        description=(
            "Smallest segmented area (mm²) that makes a slice 'yes'. 100 mm² is about "
            "28 pixels of a 240 mm field of view at the default 128 px model input: smaller "
            "slivers are set aside as ambiguous rather than called either class."
        ),
    )
    min_brain_area_mm2: float = Field(
        default=2000.0,
        ge=0,
        description=(
            "Smallest foreground (brain or head) area (mm²) of a tumour-free slice; "
            "emptier slices are set aside as 'no_brain'."
        ),
    )
    segments: tuple[str, ...] = Field(
        default=(),
        description=(
            "Segments that count as tumour, by segment number or label value (e.g. '4' for "
            "BraTS enhancing tumour) or by segment label (case-insensitive, e.g. 'Enhancing "
            "tumor'); empty: every segment."
        ),
    )
    propagate_to_coregistered: bool = Field(
        default=True,
        description=(
            "Give a segmentation's slice labels to the other series of the same patient that "
            "share its Frame of Reference and exactly its slice geometry (same orientation, "
            "positions, pixel spacing, rows and columns)."
        ),
    )

    @model_validator(mode="after")
    def _check_segments(self) -> LabelRuleConfig:
        blank = [value for value in self.segments if not str(value).strip()]
        if blank:
            raise ValueError("segments: segment numbers or labels must not be empty")
        return self


class VolumesConfig(_Section):
    """Co-registered volumes with segmentation masks (NIfTI), e.g. BraTS.

    ``image_pattern`` and ``mask_pattern`` are paths relative to the source folder with the
    placeholders ``{case}`` and (image only) ``{sequence}``; every case whose mask matches is
    read. The BraTS layout works out of the box.
    """

    image_pattern: str = Field(
        default="{case}/{case}_{sequence}.nii.gz",
        description="Image volume of a case and sequence, relative to the source folder.",
    )
    mask_pattern: str = Field(
        default="{case}/{case}_seg.nii.gz",
        description="Segmentation mask of a case (label values), relative to the source folder.",
    )
    sequences: tuple[str, ...] = Field(
        default=("flair",),
        min_length=1,
        description=(
            "Sequences read per case (the {sequence} values), each slice its own image; a "
            "patient's sequences stay on one side of the split."
        ),
    )
    plane: Literal["axial", "coronal", "sagittal"] = Field(
        default="axial",
        description="Slicing plane; slices come out as a radiologist displays them.",
    )
    image_size_px: int = Field(
        default=256,
        ge=8,
        le=4096,
        description="Side of the square 8-bit PNG written for every slice (padded, never stretched).",
    )
    percentile_low: float = Field(
        default=0.5, ge=0, lt=100, description="Percentile of a volume's brain mapped to black."
    )
    percentile_high: float = Field(
        default=99.5, gt=0, le=100, description="Percentile of a volume's brain mapped to white."
    )

    @model_validator(mode="after")
    def _check(self) -> VolumesConfig:
        twice = sorted({s for s in self.sequences if self.sequences.count(s) > 1})
        if twice:
            raise ValueError(f"sequences: {', '.join(twice)} is given twice")
        if "{sequence}" in self.mask_pattern:
            raise ValueError(
                "mask_pattern must not hold {sequence}: one mask labels every sequence"
            )
        if "{case}" not in self.image_pattern or "{sequence}" not in self.image_pattern:
            raise ValueError("image_pattern needs both {case} and {sequence}")
        if "{case}" not in self.mask_pattern:
            raise ValueError("mask_pattern needs {case}")
        if self.percentile_low >= self.percentile_high:
            raise ValueError("percentile_low must be below percentile_high")
        return self


class SplitConfig(_Section):
    """How groups are assigned to train / validation / test."""

    train_fraction: float = Field(
        default=0.70, gt=0, lt=1, description="Share of groups for training."
    )
    val_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of groups for validation."
    )
    test_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of groups for testing."
    )
    strategy: Literal["grouped", "random"] = Field(
        default="grouped",
        description=(
            "'grouped' keeps every near-duplicate group (or patient) on one side; 'random' splits "
            "by file, as the seed project did (optimistic: copies leak across splits)."
        ),
    )
    seed: int = Field(default=42, description="Seed of the split.")

    @model_validator(mode="after")
    def _check_fractions(self) -> SplitConfig:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train_fraction + val_fraction + test_fraction must add up to 1, got "
                f"{self.train_fraction} + {self.val_fraction} + {self.test_fraction} = {total:.3f}"
            )
        return self


class PreprocessConfig(_Section):
    """Turns a source image into the stored training image.

    The defaults leave the model no shortcut through canvas size, borders or global brightness:
    crop to the head, pad (never stretch) to a square, standardise intensities per image. The
    seed project stretched the whole canvas (``crop_to_head=False, keep_aspect=False,
    intensity='none'``), which the seed-parity benchmark reproduces.
    """

    image_size_px: int = Field(
        default=128, ge=8, le=1024, description="Side of the square output image."
    )
    crop_to_head: bool = Field(
        default=True,
        description="Crop to the largest bright component (the head) before resizing, so borders carry no signal.",
    )
    keep_aspect: bool = Field(
        default=True,
        description="Pad to a square before resizing instead of stretching (the seed stretched).",
    )
    intensity: Literal["none", "percentile", "clahe"] = Field(
        default="percentile",
        description=(
            "Per-image intensity standardisation: 'percentile' maps the head's low..high "
            "percentiles to 0..255; 'clahe' does that, then contrast-limited adaptive histogram "
            "equalisation; 'none' keeps the source intensities."
        ),
    )
    low_percentile: float = Field(default=1.0, ge=0, lt=50, description="Percentile mapped to 0.")
    high_percentile: float = Field(
        default=99.0, gt=50, le=100, description="Percentile mapped to 255."
    )
    min_component_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description=(
            "The head is the union of bright connected components at least this share of the "
            "largest (a low slice cuts the brain in several pieces; specks and burnt-in text "
            "are smaller)."
        ),
    )
    brain_mask: Literal["none", "inner"] = Field(
        default="none",
        description=(
            "'inner' blanks everything outside the head mask shrunk by skull_margin_fraction "
            "and crops to it, for every source alike: a slice with its skull (Br35H) and a "
            "skull-stripped one (BraTS) then look alike at the edge, so the skull is no cue to "
            "the source; 'none' keeps the whole head."
        ),
    )
    skull_margin_fraction: float = Field(
        default=0.06,
        ge=0,
        lt=0.5,
        description=(
            "With brain_mask='inner', how far the head mask shrinks, as a share of its "
            "equivalent diameter (the skull and scalp are about 5-7% of an adult head's)."
        ),
    )


class AugmentConfig(_Section):
    """Training-time augmentation (Keras preprocessing layers; inactive at inference)."""

    enabled: bool = Field(default=True, description="Apply augmentation while training.")
    flip: bool = Field(
        default=True, description="Random left-right flips (brains are near-symmetric)."
    )
    rotation_fraction: float = Field(
        default=0.05, ge=0, le=0.5, description="Max rotation, fraction of a full turn."
    )
    zoom_fraction: float = Field(default=0.1, ge=0, lt=1, description="Max zoom in or out.")
    translation_fraction: float = Field(
        default=0.05, ge=0, lt=1, description="Max shift, fraction of the side."
    )
    brightness_delta: float = Field(
        default=0.1, ge=0, lt=1, description="Max brightness change, fraction of range."
    )
    contrast_factor: float = Field(
        default=0.2, ge=0, lt=1, description="Max contrast change factor."
    )
    gamma_max_log2: float = Field(
        default=0.3, ge=0, le=2, description="Gamma drawn from 2**U(-x, x)."
    )
    blur_probability: float = Field(
        default=0.2, ge=0, le=1, description="Share of images blurred (3x3)."
    )
    noise_stddev: float = Field(
        default=0.02, ge=0, lt=1, description="Gaussian noise std on the 0..1 scale."
    )
    bias_field_max_log_gain: float = Field(
        default=0.0,
        ge=0,
        le=2,
        description=(
            "Smooth multiplicative intensity field exp(f), f in [-x, x] on a 4x4 grid "
            "(coil / bias-field variation between scanners); 0 disables it."
        ),
    )
    low_resolution_probability: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of images downsampled and upsampled back (coarser scanners); 0: off.",
    )
    low_resolution_factor: float = Field(
        default=2.0, ge=1, le=8, description="Downsampling factor of the low-resolution images."
    )


class TrainConfig(_Section):
    """Model and optimisation settings."""

    model: Literal["braincls_resnet", "seed_cnn"] = Field(
        default="braincls_resnet",
        description="Architecture: 'braincls_resnet' (default) or the seed project's 'seed_cnn'.",
    )
    base_filters: int = Field(
        default=24, ge=4, le=256, description="Filters of the first block (braincls_resnet)."
    )
    epochs: int = Field(default=30, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(default=32, ge=1, description="Mini-batch size.")
    learning_rate: float = Field(
        default=2e-3, gt=0, description="Peak AdamW learning rate (the constant one for 'plateau')."
    )
    lr_schedule: Literal["cosine", "plateau"] = Field(
        default="cosine",
        description=(
            "'cosine': linear warm-up from a tenth of learning_rate over warmup_epochs, then "
            "cosine decay to zero at the last epoch (per step; resumes where it stopped); "
            "'plateau': constant learning_rate, halved after reduce_lr_patience epochs without a "
            "validation AUC gain (the seed's constant rate with reduce_lr_patience=0)."
        ),
    )
    dropout_rate: float = Field(
        default=0.3, ge=0, lt=1, description="Dropout before the output layer."
    )
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay.")
    seed: int = Field(default=42, description="Seed for Python, NumPy and Keras.")
    shuffle_buffer: int = Field(default=4096, ge=1, description="Shuffle buffer (images).")
    class_weights: bool = Field(
        default=True, description="Weight classes inversely to their frequency."
    )
    balance_sources: bool = Field(
        default=True,
        description=(
            "With several data sources, weight every training image so that each source "
            "contributes the same total weight and, within it, each class (with class_weights) "
            "the same: no source's size or class mix becomes a shortcut. One source: the same "
            "as class_weights."
        ),
    )
    balance_brain_area: bool = Field(
        default=True,
        description=(
            "Within each source whose images know their brain area (slices of volumes and "
            "DICOM), weight the classes equally inside every brain-area band: tumour-free "
            "slices lie mostly at the top and bottom of a brain, and without this a model can "
            "score by slice position."
        ),
    )
    brain_area_bands: int = Field(
        default=8, ge=1, le=64, description="Brain-area bands (quantiles per source)."
    )
    warmup_epochs: int = Field(
        default=3,
        ge=0,
        description=(
            "First epochs that can be neither the kept best epoch nor count towards early "
            "stopping or learning-rate reduction: batch-norm statistics and augmentation make "
            "early validation AUCs noisy, and a lucky epoch 1 should not end training."
        ),
    )
    early_stopping_patience: int = Field(
        default=6,
        ge=0,
        description="Epochs without val AUC gain before stopping (0: never stop early).",
    )
    reduce_lr_patience: int = Field(
        default=3,
        ge=0,
        description=(
            "Epochs without val AUC gain before halving the learning rate, with "
            "lr_schedule='plateau' (0: never)."
        ),
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation.")
    test_time_flip: bool = Field(
        default=True,
        description=(
            "Save a model that averages P(positive) over the image and its left-right mirror "
            "(test-time augmentation, built into model.keras, so evaluation, the threshold and "
            "prediction all use it)."
        ),
    )
    mixed_precision: Literal["auto", "on", "bfloat16", "off"] = Field(
        default="auto",
        description=(
            "'auto': mixed_float16 on GPUs, mixed_bfloat16 on CPUs with AMX-BF16 when "
            "TensorFlow's oneDNN kernels are on, float32 otherwise; 'on': always mixed_float16; "
            "'bfloat16': always mixed_bfloat16; 'off': float32. The saved model is float32 "
            "whatever the training precision."
        ),
    )


class EvaluateConfig(_Section):
    """Evaluation settings."""

    threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Decision threshold on P(tumor) used when threshold_rule is 'fixed'.",
    )
    threshold_rule: Literal["youden", "sensitivity_floor", "fixed"] = Field(
        default="youden",
        description=(
            "How the decision threshold is chosen on the validation split (never the test split): "
            "'youden' maximises sensitivity + specificity - 1; 'sensitivity_floor' takes the "
            "highest threshold whose validation sensitivity is at least min_sensitivity; 'fixed' "
            "uses threshold."
        ),
    )
    min_sensitivity: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Validation sensitivity the 'sensitivity_floor' threshold rule must reach.",
    )
    bootstrap_resamples: int = Field(
        default=1000,
        ge=0,
        description="Bootstrap resamples of the test split for confidence intervals (0: none).",
    )
    bootstrap_seed: int = Field(default=0, description="Seed of the bootstrap resampling.")
    confidence_level: float = Field(
        default=0.95, gt=0, lt=1, description="Coverage of the bootstrap confidence intervals."
    )
    calibration_bins: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Equal-width probability bins for the reliability diagram and the ECE.",
    )
    gradcam_examples_per_category: int = Field(
        default=4,
        ge=0,
        le=32,
        description=(
            "Grad-CAM overlays per category (true positive, false positive, false negative); "
            "0 disables Grad-CAM."
        ),
    )


class TciaConfig(_Section):
    """NBIA v4 client and ingest settings (owned by the TCIA ingest stage)."""

    timeout_seconds: float = Field(default=60.0, gt=0, description="HTTP timeout per request.")
    max_attempts: int = Field(default=5, ge=1, description="Tries per request or series download.")
    max_concurrent_downloads: int = Field(
        default=2,
        ge=1,
        description=(
            "Series downloaded at once by one ingest run; also the value of the Prefect "
            "global concurrency limit 'tcia' (all runs together) when an ingest has to create "
            "it (`braincls setup --tcia-limit` sets it on a server)."
        ),
    )
    include_segmentations: bool = Field(
        default=True,
        description=(
            "Also ingest the collection's SEG and RTSTRUCT series of the listed patients: the "
            "segmentations that label their slices (a Modality filter alone leaves them out)."
        ),
    )
    backoff_initial_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Wait before the second try; doubles with each further try (with jitter).",
    )
    backoff_max_seconds: float = Field(
        default=60.0, ge=0, description="Longest wait between two tries (before Retry-After)."
    )
    max_retry_after_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Longest server-requested wait (HTTP Retry-After) that is honoured.",
    )


class PseudonymSaltMissing(ValueError):
    """Patient IDs must be pseudonymised, and no salt is configured."""


PSEUDONYM_SALT_MISSING = (
    "Patient IDs of this DICOM must be pseudonymised (it is not a public de-identified "
    "archive ingested by braincls), and no pseudonym salt is configured. Set "
    "BRAINCLS_PSEUDONYM_SALT to a long random secret (and keep it: a new salt gives new "
    "pseudonyms), or BRAINCLS_PSEUDONYM_SALT_BLOCK to the name of a Prefect Secret block "
    "holding it, where the conversion runs; or, if the data is de-identified already, set "
    "convert.pseudonymize_patient_id to false"
)


class ConvertConfig(_Section):
    """DICOM to image conversion settings (owned by the conversion stage).

    :meth:`config_hash` is part of every per-series cache key: it covers every field that changes
    an output file or table, and leaves out ``workers``, which changes none.
    """

    modality: str = Field(
        default=DEFAULT_MODALITY,
        description=(
            "(0008,0060) Modality of the DICOM data, the one setting for it: ingest asks the "
            "archive for it, conversion sets other image objects aside, and the validation "
            "gate accepts it (the modality each source was converted with). An empty string "
            "accepts every image modality."
        ),
    )
    image_size_px: int = Field(
        default=256,
        ge=8,
        le=4096,
        description="Side of the square 8-bit training PNG written for every slice or frame.",
    )
    keep_aspect: bool = Field(
        default=True,
        description=(
            "Scale the longer physical side (from (0028,0030) Pixel Spacing) to image_size_px and "
            "pad the shorter one with black, so anatomy keeps its proportions; False stretches "
            "the slice onto the square."
        ),
    )
    window_source: Literal["file", "percentile"] = Field(
        default="file",
        description=(
            "'file' uses the file's (0028,3010) VOI LUT Sequence or (0028,1050/1051) Window "
            "Center/Width when present and the percentile window otherwise; 'percentile' always "
            "uses the percentile window (MR values have no fixed scale)."
        ),
    )
    percentile_low: float = Field(
        default=0.5, ge=0, lt=100, description="Percentile of a slice mapped to black (0)."
    )
    percentile_high: float = Field(
        default=99.5, gt=0, le=100, description="Percentile of a slice mapped to white (255)."
    )
    skip_background_slices: bool = Field(
        default=True,
        description="Set aside slices that are almost all background (reason 'background_slice').",
    )
    background_threshold_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description=(
            "A pixel of a 32x32 area-averaged thumbnail is foreground when it exceeds this "
            "fraction of the way from the series' darkest (1st percentile) to its brightest "
            "(99th percentile) thumbnail value."
        ),
    )
    min_foreground_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Slices with a smaller share of foreground pixels are background slices.",
    )
    write_native_16bit: bool = Field(
        default=False,
        description=(
            "Also write a 16-bit PNG at native size holding the modality-LUT values (rounded, "
            "clipped to 0..65535; MONOCHROME1 flipped within each frame's range), for users "
            "who want full depth."
        ),
    )
    pseudonymize_patient_id: bool | Literal["auto"] = Field(
        default="auto",
        description=(
            "Replace (0010,0020) Patient ID in every output by a salted HMAC-SHA256 pseudonym "
            "('anon-' + 16 hex digits); labels tables still use the original IDs. 'auto' "
            "(the default): for every source but a public de-identified archive, that is "
            "every folder not ingested from an NBIA API by braincls (a --dicom folder, a "
            "hospital export); false: the source is de-identified already. The salt comes "
            "from BRAINCLS_PSEUDONYM_SALT or a Prefect Secret block, never from the config."
        ),
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes for decoding; 0 uses one per available CPU.",
    )
    _pseudonym_salt: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_ranges(self) -> ConvertConfig:
        if self.percentile_low >= self.percentile_high:
            raise ValueError(
                f"percentile_low ({self.percentile_low}) must be below percentile_high "
                f"({self.percentile_high})"
            )
        return self

    def with_pseudonym_salt(self, salt: str | SecretStr) -> ConvertConfig:
        """A copy that pseudonymises with ``salt`` (kept out of every dump, record and
        parameter: it is a private attribute, travelling only to conversion processes)."""
        copy = self.model_copy()
        copy._pseudonym_salt = salt if isinstance(salt, SecretStr) else SecretStr(salt)
        return copy

    def salt_value(self) -> str:
        """The salt attached by :meth:`with_pseudonym_salt`, else ``BRAINCLS_PSEUDONYM_SALT``;
        '' when there is none."""
        if self._pseudonym_salt is not None and self._pseudonym_salt.get_secret_value():
            return self._pseudonym_salt.get_secret_value()
        return Settings().pseudonym_salt.get_secret_value()

    @property
    def pseudonym_salt(self) -> SecretStr:
        """The salt of the pseudonyms; :class:`PseudonymSaltMissing` when none is configured."""
        salt = self.salt_value()
        if not salt:
            raise PseudonymSaltMissing(PSEUDONYM_SALT_MISSING)
        return SecretStr(salt)

    def config_hash(self) -> str:
        """SHA-256 over the output-relevant fields; when Patient IDs may be pseudonymised, the
        salt enters through its own hash (never the salt itself)."""
        values = self.model_dump(mode="json", exclude={"workers"})
        if self.pseudonymize_patient_id is not False:
            salt = self.salt_value().encode("utf-8")
            values["pseudonym_salt_sha256"] = hashlib.sha256(salt).hexdigest()
        return stable_hash(values)


class ValidateConfig(_Section):
    """Data-validation gate settings (owned by the validation stage).

    Check names (for ``warning_checks``) are listed in ``braincls.validate.suite.CHECKS``.
    """

    labels: tuple[str, ...] | None = Field(
        default=None,
        description=(
            "The class names the data may hold; label_index must be the position in this list, "
            "sorted. None infers the classes from the manifest (and skips the label-set check)."
        ),
    )
    min_count_per_class: int = Field(
        default=5, ge=1, description="Every class needs at least this many images in every split."
    )
    min_class_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "Smallest share of a split that any present class may hold (for N classes keep it "
            "below 1/N). Classes absent from a split are the count check's business."
        ),
    )
    min_image_size_px: int = Field(
        default=16, ge=1, description="Smallest side of a stored (preprocessed) image."
    )
    max_image_size_px: int = Field(
        default=1024, ge=1, description="Largest side of a stored (preprocessed) image."
    )
    min_source_side_px: int = Field(
        default=64, ge=1, description="Smallest width or height of a source image."
    )
    max_source_side_px: int = Field(
        default=8192, ge=1, description="Largest width or height of a source image."
    )
    min_mean_intensity: float = Field(
        default=5.0,
        ge=0,
        le=255,
        description=(
            "Stored 8-bit images whose mean intensity is below this are blank "
            "(Br35H, default preprocessing: 34 at the lowest of 300, 77 median)."
        ),
    )
    max_mean_intensity: float = Field(
        default=250.0,
        ge=0,
        le=255,
        description="Stored 8-bit images whose mean intensity is above this are saturated.",
    )
    min_std_intensity: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Images neither blank nor saturated whose intensity standard deviation is below "
            "this are constant (Br35H, default preprocessing: 39 at the lowest of 300)."
        ),
    )
    max_abnormal_image_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "Share of images that may be blank, saturated or constant (each check on its own) "
            "before that check fails."
        ),
    )
    max_quarantine_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Fails when more than this share of all files seen was set aside.",
    )
    warning_checks: tuple[str, ...] = Field(
        default=("labels.class_balance", "uniqueness.sha256", "images.source_size_px"),
        description=(
            "Checks (names or fnmatch patterns such as 'images.*') that only warn; every other "
            "check blocks the run before training."
        ),
    )


class RegistryConfig(_Section):
    """Model registry and promotion settings (owned by the registry)."""

    min_sensitivity: float = Field(
        default=0.8, ge=0, le=1, description="Promotion floor on sensitivity."
    )
    min_roc_auc: float = Field(default=0.8, ge=0, le=1, description="Promotion floor on ROC AUC.")
    non_inferiority_margin: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "A challenger replaces the champion only if its decision metric is at least the "
            "champion's minus this margin, both measured on the same test data."
        ),
    )
    decision_metric: Literal[
        "roc_auc",
        "pr_auc",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "accuracy",
        "f1",
        "mcc",
    ] = Field(
        default="roc_auc",
        description="Test metric (higher is better) compared between challenger and champion.",
    )


class SourcesConfig(_Section):
    """The data sources of a run, listed in a config file instead of (or besides) the command
    line; every one keeps its name (its folder's) through the manifests and the report."""

    images: tuple[str, ...] = Field(
        default=(), description="Class-per-folder image sets (e.g. Br35H), one source each."
    )
    volumes: tuple[str, ...] = Field(
        default=(), description="Folders of NIfTI volumes with segmentation masks, one source each."
    )
    dicom: tuple[str, ...] = Field(
        default=(), description="DICOM folders, converted together as one source."
    )
    labels: str | None = Field(
        default=None,
        description="Labels table (CSV) for the DICOM folders; segmentations otherwise.",
    )


class PipelineConfig(BaseModel):
    """The whole configuration tree; every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sources: SourcesConfig = Field(
        default_factory=SourcesConfig, description="Data sources (besides those of the command)."
    )
    importing: ImportConfig = Field(default_factory=ImportConfig, description="Image import.")
    labels: LabelRuleConfig = Field(
        default_factory=LabelRuleConfig, description="Slice labels from segmentations."
    )
    volumes: VolumesConfig = Field(
        default_factory=VolumesConfig, description="NIfTI volumes with masks."
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="Data split.")
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Preprocessing."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")
    tcia: TciaConfig = Field(default_factory=TciaConfig, description="TCIA ingest.")
    convert: ConvertConfig = Field(default_factory=ConvertConfig, description="DICOM conversion.")
    validate_: ValidateConfig = Field(
        default_factory=ValidateConfig, alias="validate", description="Data validation gate."
    )
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model registry.")
