"""The one configuration tree of braincls.

Every stage reads one section of :class:`PipelineConfig`; each task receives only the section it
needs so that its cache key stays narrow. Machine-specific values (data root, TCIA URL) come from
:class:`Settings`, which reads ``BRAINCLS_*`` environment variables.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TCIA_BASE_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v4/"


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
    near_duplicate_max_distance_bits: int = Field(
        default=10,
        ge=0,
        le=64,
        description=(
            "Two images are near-duplicate candidates when their 64-bit perceptual hashes "
            "differ in at most this many bits."
        ),
    )
    near_duplicate_min_correlation: float = Field(
        default=0.85,
        ge=-1,
        le=1,
        description=(
            "A candidate pair is a near-duplicate (same group) when the correlation of its two "
            "32x32 content thumbnails is at least this."
        ),
    )


class SplitConfig(_Section):
    """How groups are assigned to train / validation / test."""

    train_fraction: float = Field(default=0.70, gt=0, lt=1, description="Share of groups for training.")
    val_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of groups for validation.")
    test_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of groups for testing.")
    strategy: Literal["grouped", "random"] = Field(
        default="grouped",
        description=(
            "'grouped' keeps every near-duplicate group (or patient) on one side; 'random' splits "
            "by file, as the seed project did (optimistic: copies leak across splits)."
        ),
    )
    seed: int = Field(default=42, description="Seed of the split.")


class PreprocessConfig(_Section):
    """Turns a source image into the stored training image."""

    image_size_px: int = Field(default=128, ge=8, le=1024, description="Side of the square output image.")
    crop_to_head: bool = Field(
        default=False,
        description="Crop to the largest bright component (the head) before resizing, so borders carry no signal.",
    )
    keep_aspect: bool = Field(
        default=False,
        description="Pad to a square before resizing instead of stretching (the seed stretched).",
    )


class TrainConfig(_Section):
    """Model and optimisation settings."""

    model: Literal["seed_cnn"] = Field(default="seed_cnn", description="Architecture name.")
    epochs: int = Field(default=10, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(default=32, ge=1, description="Mini-batch size.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    dropout_rate: float = Field(default=0.5, ge=0, lt=1, description="Dropout before the output layer.")
    seed: int = Field(default=42, description="Seed for Python, NumPy and Keras.")
    shuffle_buffer: int = Field(default=4096, ge=1, description="Shuffle buffer (images).")


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
        default=2, ge=1, description="Concurrent series downloads per host (Prefect limit 'tcia')."
    )
    modality: str = Field(default="MR", description="Modality filter for ingest.")


class ConvertConfig(_Section):
    """DICOM to image conversion settings (owned by the conversion stage)."""

    modality: str = Field(default="MR", description="Modality to convert; others are set aside.")


class ValidateConfig(_Section):
    """Data-validation gate settings (owned by the validation stage)."""

    max_quarantine_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Blocking when more than this share of files was set aside."
    )


class RegistryConfig(_Section):
    """Model registry and promotion settings (owned by the registry)."""

    min_sensitivity: float = Field(default=0.8, ge=0, le=1, description="Promotion floor on sensitivity.")
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


class PipelineConfig(BaseModel):
    """The whole configuration tree; every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    importing: ImportConfig = Field(default_factory=ImportConfig, description="Image import.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Data split.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Preprocessing.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")
    tcia: TciaConfig = Field(default_factory=TciaConfig, description="TCIA ingest.")
    convert: ConvertConfig = Field(default_factory=ConvertConfig, description="DICOM conversion.")
    validate_: ValidateConfig = Field(
        default_factory=ValidateConfig, alias="validate", description="Data validation gate."
    )
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model registry.")


def stable_hash(value: object) -> str:
    """SHA-256 hex digest of ``value`` serialised as canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
