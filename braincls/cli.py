"""The ``braincls`` command: the one outer layer that starts flows (imported lazily)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    name="braincls",
    help="Brain MRI tumor / no-tumor classification pipeline (research use only).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DataRoot = Annotated[
    Path | None,
    typer.Option("--data-root", help="Data root (default: $BRAINCLS_DATA_ROOT or ./data)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line to stderr and exit non-zero, without a traceback."""
    typer.echo(f"braincls: error: {message}", err=True)
    raise typer.Exit(code)


def _quiet_defaults() -> None:
    """Environment defaults for orchestrated runs: telemetry off, library logs on the dashboard."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "braincls")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow 2.21's oneDNN kernels corrupted the heap (glibc abort) in 2 of 3 CPU training
    # runs of braincls_resnet here; with them off training is stable and about 1.6x slower.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    # The temporary API server needs more than Prefect's 20 s default on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _data_root(data_root: Path | None) -> Path:
    from braincls.config import Settings

    return (data_root or Settings().data_root).resolve()


@app.command()
def run(
    images: Annotated[
        Path, typer.Option("--images", help="Class-per-folder image set (e.g. yes/, no/).")
    ],
    data_root: DataRoot = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side in pixels.")] = 128,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Maximum training epochs (default 30, early stopping).")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="Architecture: braincls_resnet (default) or seed_cnn.")
    ] = "braincls_resnet",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and of training.")] = 42,
    split: Annotated[
        str, typer.Option("--split", help="grouped (near-duplicates kept together) or random.")
    ] = "grouped",
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ignore cached stage results and recompute.")
    ] = False,
) -> None:
    """Run the whole pipeline on an image folder and print where the report is."""
    from pydantic import ValidationError

    from braincls.config import PipelineConfig
    from braincls.data import ImportError_, class_folders
    from braincls.model import MODEL_NAMES

    try:
        class_folders(images)
    except ImportError_ as error:
        fail(str(error))
    if model not in MODEL_NAMES:
        fail(f"--model: unknown model '{model}'; choose one of: {', '.join(MODEL_NAMES)}")
    if split not in ("grouped", "random"):
        fail(f"--split: must be 'grouped' or 'random', got '{split}'")
    try:
        config = PipelineConfig.model_validate(
            {
                "split": {"strategy": split, "seed": seed},
                "preprocess": {"image_size_px": image_size},
                "train": {"model": model, "seed": seed, **({"epochs": epochs} if epochs is not None else {})},
            }
        )
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    _quiet_defaults()
    if refresh:
        os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"
    from flows.pipeline import pipeline

    result = pipeline(
        images_dir=str(images.resolve()), data_root=str(_data_root(data_root)), config=config
    )
    metrics = result["metrics"]
    typer.echo(
        f"test split ({split}): accuracy {metrics['accuracy']:.3f}, ROC AUC {metrics['roc_auc']:.3f}"
    )
    typer.echo(f"report: {result['report_html']}")


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    n: Annotated[int, typer.Option("--n", help="Number of images (image set).")] = 600,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side in pixels.")] = 256,
    dicom: Annotated[
        bool, typer.Option("--dicom", help="Write a TCIA-like DICOM collection instead of PNGs.")
    ] = False,
    patients: Annotated[int, typer.Option("--patients", help="Patients (--dicom).")] = 6,
    collection: Annotated[
        str, typer.Option("--collection", help="Collection name (--dicom).")
    ] = "BRAINCLS-PHANTOM",
) -> None:
    """Generate synthetic brain MR slices (class-per-folder PNGs, or DICOM with --dicom)."""
    from braincls import phantom as phantom_module

    if n < 2:
        fail("--n: at least 2 images are needed (one per class)")
    if dicom:
        summary = phantom_module.generate_dicom_collection(
            out, collection=collection, n_patients=patients, seed=seed
        )
    else:
        summary = phantom_module.generate_image_set(
            out, n_images=n, seed=seed, image_size_px=image_size
        )
    typer.echo(f"wrote {summary} to {out}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
