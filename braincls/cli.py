"""The ``braincls`` command: the one outer layer that starts flows (imported lazily)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from braincls.registry.store import ModelRegistry, ModelVersion

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

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="NBIA v4 API base URL (default: $BRAINCLS_TCIA_BASE_URL or TCIA)."
    ),
]
ImageSize = Annotated[int, typer.Option("--image-size", help="Image side in pixels.")]
Epochs = Annotated[
    int | None,
    typer.Option("--epochs", help="Maximum training epochs (default 30, early stopping)."),
]


def _echo_result(result: dict[str, Any]) -> None:
    """The last lines of a DICOM training run: test metrics, model version, report path."""
    metrics = result["metrics"]
    typer.echo(
        f"test split (by patient): accuracy {metrics['accuracy']:.3f}, "
        f"ROC AUC {metrics['roc_auc']:.3f}; model {result['model_version']} "
        f"({'promoted to champion' if result['promoted'] else 'kept as challenger'})"
    )
    typer.echo(f"report: {result['report_html']}")


def _shown(value: float | None) -> str:
    """A metric for the terminal: three decimals, or n/a when the data cannot define it."""
    return "n/a" if value is None else f"{value:.3f}"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line to stderr and exit non-zero, without a traceback."""
    typer.echo(f"braincls: error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _stage_failures() -> Iterator[None]:
    """A failed stage ends the command with its one-line message (stage, cause, what to do)
    and exit code 1; the full traceback is in the run's logs on the dashboard."""
    from flows.failures import StageFailed

    try:
        yield
    except StageFailed as error:
        fail(str(error), code=1)


@contextmanager
def _live_progress() -> Iterator[Any]:
    """Live progress of the work inside the block on stderr (rich on a terminal, plain lines
    otherwise); yields the callback for library calls that take ``on_progress``."""
    from braincls.terminal import TerminalProgress
    from tasks.progress import listening

    with TerminalProgress() as progress, listening(progress):
        yield progress


def _quiet_defaults() -> None:
    """Environment defaults for orchestrated runs: telemetry off, library logs on the dashboard."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "braincls")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The temporary API server needs more than Prefect's 20 s default on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _config_file(path: Path | None) -> dict[str, Any]:
    """The settings of a YAML or JSON configuration file (nothing without one)."""
    import json

    import yaml

    if path is None:
        return {}
    if not path.is_file():
        fail(f"--config: {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
        loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        fail(f"--config: {path}: not valid YAML or JSON ({str(error).splitlines()[0]})")
    if not isinstance(loaded, dict):
        fail(f"--config: {path}: the file must hold a mapping of config sections")
    return loaded


def _given(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The options given on the command line (None: not given), by config section."""
    return {
        name: {key: value for key, value in values.items() if value is not None}
        for name, values in sections.items()
        if any(value is not None for value in values.values())
    }


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values, section by section (the command line wins)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _data_root(data_root: Path | None) -> Path:
    from braincls.config import Settings

    return (data_root or Settings().data_root).resolve()


@app.command()
def run(
    images: Annotated[
        list[Path] | None,
        typer.Option(
            "--images",
            help="Class-per-folder image set (e.g. yes/, no/); repeatable, one source each.",
        ),
    ] = None,
    data_root: DataRoot = None,
    dicom: Annotated[
        list[Path] | None,
        typer.Option("--dicom", help="DICOM folder to convert and train on (repeatable)."),
    ] = None,
    volumes: Annotated[
        list[Path] | None,
        typer.Option(
            "--volumes",
            help="Folder of NIfTI volumes with segmentation masks (BraTS layout); repeatable.",
        ),
    ] = None,
    sequence: Annotated[
        list[str] | None,
        typer.Option(
            "--sequence",
            help="Sequence of --volumes to slice (t1ce, flair, t2, t1; repeatable; default flair).",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labels table (CSV) for --dicom; without one, the DICOM SEG / RTSTRUCT objects label the slices.",
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option("--dask-address", help="Convert --dicom on this Dask scheduler (tcp://...)."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Image side in pixels (default 128).")
    ] = None,
    epochs: Epochs = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Architecture: braincls_resnet (default) or seed_cnn."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the split and of training (default 42).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="grouped (near-duplicates kept together; default) or random."),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Rebuild every stage's outputs instead of reusing them."),
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Pipeline configuration (YAML or JSON; sources may be listed in it); options given here win.",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline on image folders, NIfTI volumes and / or DICOM; print where the
    report is."""
    from pydantic import ValidationError

    from braincls.config import PipelineConfig
    from braincls.data.images import ImageFolderError, class_folders
    from braincls.model.factory import MODEL_NAMES

    base = _config_file(config_file)
    listed = base.get("sources", {})
    if (
        not images
        and not dicom
        and not volumes
        and not any(listed.get(kind) for kind in ("images", "volumes", "dicom"))
    ):
        fail("give at least one source: --images, --volumes or --dicom (or list them in --config)")
    for folder in images or []:
        try:
            class_folders(folder)
        except ImageFolderError as error:
            fail(f"--images: {error}")
    for option, folders in (("--dicom", dicom), ("--volumes", volumes)):
        for folder in folders or []:
            if not folder.is_dir():
                fail(f"{option}: {folder}: folder not found")
    if labels is not None and not dicom:
        fail("--labels: a labels table labels --dicom images; give --dicom too")
    if labels is not None and not labels.is_file():
        fail(f"--labels: {labels}: labels table not found")
    if sequence and not volumes:
        fail("--sequence: picks the sequences of --volumes; give --volumes too")
    if model is not None and model not in MODEL_NAMES:
        fail(f"--model: unknown model '{model}'; choose one of: {', '.join(MODEL_NAMES)}")
    if split is not None and split not in ("grouped", "random"):
        fail(f"--split: must be 'grouped' or 'random', got '{split}'")
    try:
        config = PipelineConfig.model_validate(
            _merged(
                base,
                _given(
                    {
                        "split": {"strategy": split, "seed": seed},
                        "preprocess": {"image_size_px": image_size},
                        "train": {"model": model, "seed": seed, "epochs": epochs},
                        "volumes": {"sequences": list(sequence) if sequence else None},
                    }
                ),
            )
        )
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    _quiet_defaults()
    from flows.pipeline import pipeline

    with _stage_failures(), _live_progress():
        result = pipeline(
            data_root=str(_data_root(data_root)),
            config=config,
            images_dirs=[str(folder.resolve()) for folder in images or []] or None,
            volumes_dirs=[str(folder.resolve()) for folder in volumes or []] or None,
            dicom_dirs=[str(folder.resolve()) for folder in dicom or []] or None,
            labels=str(labels.resolve()) if labels is not None else None,
            dask_address=dask_address,
            refresh=refresh,
        )
    metrics = result["metrics"]
    typer.echo(
        f"test split ({metrics['split']}): accuracy {_shown(metrics['accuracy'])}, "
        f"ROC AUC {_shown(metrics['roc_auc'])}"
    )
    for row in metrics.get("by_source", []) if len(metrics.get("by_source", [])) > 1 else []:
        typer.echo(
            f"  {row['source']}: n={row['n']}, ROC AUC {_shown(row.get('roc_auc'))}, sensitivity "
            f"{_shown(row.get('sensitivity'))}, specificity {_shown(row.get('specificity'))}"
        )
    typer.echo(
        f"model {result['model_version']} "
        f"({'promoted to champion' if result['promoted'] else 'kept as challenger'})"
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
    import devkit.phantom as phantom_module

    if n < 2:
        fail("--n: at least 2 images are needed (one per class)")
    if dicom:
        phantom_module.generate_dicom_collection(
            out, collection=collection, n_patients=patients, seed=seed
        )
        typer.echo(f"wrote DICOM collection {collection} ({patients} patients) to {out}")
    else:
        phantom_module.generate_image_set(out, n_images=n, seed=seed, image_size_px=image_size)
        typer.echo(f"wrote {n} phantom images (yes/, no/) to {out}")


@app.command()
def convert(
    src_dir: Annotated[
        Path, typer.Argument(help="Folder of DICOM files (any layout, e.g. a TCIA download).")
    ],
    data_root: DataRoot = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="Labels table (CSV); it overrides labels from segmentations."
        ),
    ] = None,
    modality: Annotated[str, typer.Option("--modality", help="Modality to convert.")] = "MR",
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes.")] = None,
) -> None:
    """Convert DICOM to images; print the images manifest and quarantine table paths.

    Labels come from the labels table, else from the DICOM SEG / RTSTRUCT objects in the folder;
    images with neither are converted too and listed without a label (``braincls predict``
    scores them; training sets them aside)."""
    from braincls.config import ConvertConfig, PseudonymSaltMissing
    from braincls.convert import ConversionError, convert_tree, load_labels
    from braincls.convert.labels import LabelsError

    if not src_dir.is_dir():
        fail(f"{src_dir}: DICOM folder not found")
    if labels is not None and not labels.is_file():
        fail(f"--labels: {labels}: labels table not found")
    root = _data_root(data_root)
    try:
        table = load_labels(labels) if labels is not None else None
        with _live_progress() as progress:
            result = convert_tree(
                src_dir,
                root / "converted",
                ConvertConfig.model_validate({"modality": modality}),
                table,
                workers=workers,
                keep_unlabelled=True,
                on_progress=progress,
            )
    except (ConversionError, LabelsError, PseudonymSaltMissing) as error:
        fail(str(error))
    by_source = ", ".join(f"{n} by {source}" for source, n in result.label_sources.items())
    typer.echo(
        f"{result.images} images from {result.series} series "
        f"({result.series_converted} converted, {result.series_cached} cached): "
        f"{result.images - result.unlabelled} labelled ({by_source or 'none'}), "
        f"{result.unlabelled} without a label; {result.set_aside} files set aside"
    )
    for row in result.segmentations:
        typer.echo(
            f"  segmentation {row.get('segmentation_path')}: {row.get('labelled_yes', 0)} yes, "
            f"{row.get('labelled_no', 0)} no, {row.get('ambiguous', 0)} ambiguous, "
            f"{row.get('unmatched', 0)} unmatched ({row.get('status')})"
        )
    typer.echo(f"images manifest: {result.images_manifest}")
    typer.echo(f"quarantine table: {result.quarantine_table}")


@app.command()
def validate(
    data_root: DataRoot = None,
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="Dataset record (default: the newest under the data root)."),
    ] = None,
) -> None:
    """Run the data-validation suite on the data root's current dataset; exit 1 on a blocking failure."""
    from datetime import UTC, datetime

    from braincls.common.layout import DataLayout
    from braincls.config import ValidateConfig
    from braincls.data.stage import DatasetRecord
    from braincls.validate.stage import run_validate

    layout = DataLayout(_data_root(data_root))
    records = sorted(
        (layout.manifests / "dataset").glob("*/record.json"), key=lambda p: p.stat().st_mtime
    )
    if dataset is None and not records:
        fail(f"{layout.manifests / 'dataset'}: no dataset yet; run `braincls run` first")
    path = dataset or records[-1]
    import json

    record = DatasetRecord(**json.loads(Path(path).read_text()))
    run_id = "validate-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outcome = run_validate(record, layout, ValidateConfig(), run_id, refresh=True).record
    for row in outcome.table_rows:
        typer.echo(
            f"{row['status']:>15}  {row['severity']:<8}  {row['check']:<34} {row['observed_value']}"
        )
    typer.echo(f"Data Docs: {outcome.docs_index}")
    typer.echo(f"summary: {outcome.summary_html}")
    if not outcome.success:
        typer.echo(
            f"braincls: error: blocking checks failed: {', '.join(outcome.blocking_failures)}",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def evaluate(
    model: Annotated[
        Path, typer.Option("--model", help="Model folder (runs/<key>/model or models/<version>).")
    ],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Labelled class-per-folder images to evaluate on."),
    ] = None,
    data_root: DataRoot = None,
    dicom: Annotated[
        Path | None,
        typer.Option("--dicom", help="A DICOM folder (e.g. a TCIA collection) to evaluate on."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labels table (CSV) for --dicom; without one, its SEG / RTSTRUCT objects label it.",
        ),
    ] = None,
    volumes: Annotated[
        Path | None,
        typer.Option("--volumes", help="NIfTI volumes with segmentation masks to evaluate on."),
    ] = None,
) -> None:
    """External validation: evaluate a saved model on labelled images, DICOM or NIfTI volumes
    (every metric per source too), at the threshold fixed when the model was evaluated."""
    from datetime import UTC, datetime

    from braincls.data.images import ImageFolderError, class_folders
    from braincls.evaluate.evaluation import EvaluationError
    from braincls.evaluate.external import evaluate_external

    given = [option for option in (images, dicom, volumes) if option is not None]
    if len(given) != 1:
        fail("give one of --images (an image folder), --dicom (DICOM) or --volumes (NIfTI)")
    target = given[0]
    if images is not None:
        try:
            class_folders(images)
        except ImageFolderError as error:
            fail(str(error))
    elif not target.is_dir():
        fail(f"{'--dicom' if dicom is not None else '--volumes'}: {target}: folder not found")
    if labels is not None and dicom is None:
        fail("--labels: a labels table labels --dicom images; give --dicom too")
    if labels is not None and not labels.is_file():
        fail(f"--labels: {labels}: labels table not found")
    if not model.is_dir():
        fail(f"--model: {model}: folder not found")
    _quiet_defaults()
    run_id = "external-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        record = evaluate_external(
            model,
            target,
            _data_root(data_root),
            run_id=run_id,
            dicom_labels=labels,
            dicom=dicom is not None,
            volumes=volumes is not None,
        )
    except EvaluationError as error:
        fail(str(error))
    metrics = record.summary
    typer.echo(
        f"external data {target.name} (all {metrics['n_test']} images, threshold "
        f"{metrics['threshold']:.3f} fixed at evaluation): accuracy {_shown(metrics['accuracy'])}, "
        f"ROC AUC {_shown(metrics['roc_auc'])}, sensitivity {_shown(metrics['sensitivity'])}, "
        f"specificity {_shown(metrics['specificity'])}"
    )
    for row in metrics.get("by_source", []) if len(metrics.get("by_source", [])) > 1 else []:
        typer.echo(
            f"  {row['source']}: n={row['n']}, ROC AUC {_shown(row.get('roc_auc'))}, sensitivity "
            f"{_shown(row.get('sensitivity'))}, specificity {_shown(row.get('specificity'))}"
        )
    for note in metrics.get("notes", []):
        typer.echo(f"note: {note}")
    typer.echo(f"report: {record.report_html}")


ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model", help="Model folder (runs/<key>/model or models/vNNNN); default: the champion."
    ),
]
Version = Annotated[
    str | None,
    typer.Option(
        "--version", help="Registry version of the data root (vNNNN); default: the champion."
    ),
]


def _summary_lines(summary: Any, limit: int = 20) -> list[str]:
    """The per-series / per-volume lines of a prediction summary (the first ``limit``)."""
    lines = []
    shown = summary[summary["level"].isin(["series", "volume"])]
    for row in shown.head(limit).itertuples(index=False):
        name = (
            f"series ...{str(row.series_instance_uid)[-16:]} (patient {row.patient_id})"
            if row.level == "series"
            else f"volume {Path(str(row.source_path)).name}"
        )
        if row.n_scored == 0:
            lines.append(f"  {name}: nothing scored ({row.n_set_aside} set aside)")
            continue
        over = row.slices_over_threshold
        slices = over.split(",") if isinstance(over, str) else []
        listed = ",".join(slices[:20]) + (
            f",... ({len(slices) - 20} more)" if len(slices) > 20 else ""
        )
        lines.append(
            f"  {name}: highest P(tumour) {row.max_p_tumour:.3f} (slice {row.max_slice_index}); "
            f"{row.n_over_threshold} of {row.n_scored} scored slices over the threshold"
            + (f" (slices {listed})" if row.n_over_threshold else "")
        )
    if len(shown) > limit:
        lines.append(f"  ... and {len(shown) - limit} more (see the summary table)")
    return lines


@app.command()
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Image files or folders, DICOM files or folders (any layout), NIfTI volumes."
        ),
    ],
    model: ModelDir = None,
    version: Version = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Predictions table (.csv or .parquet); the summary goes beside it "
            "(NAME.summary.csv). Default: <data root>/predictions/<run id>/.",
        ),
    ] = None,
    gradcam: Annotated[
        Path | None,
        typer.Option("--gradcam", help="Write a Grad-CAM overlay PNG per scored image here."),
    ] = None,
    data_root: DataRoot = None,
) -> None:
    """Score new images, DICOM or NIfTI volumes with the champion (or --model / --version) at
    the threshold fixed at evaluation: one row per image or slice, and a summary per series,
    volume and patient. Research use only."""
    from datetime import UTC, datetime

    from braincls.common.layout import DataLayout
    from braincls.common.notices import INTENDED_USE
    from braincls.predict.model import PredictError, open_model, resolve_model_dir
    from braincls.predict.score import predict_paths, summary_path, write_table

    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        fail(f"--out: {out}: write predictions to a .csv or .parquet file")
    _quiet_defaults()
    layout = DataLayout(_data_root(data_root))
    try:
        folder = resolve_model_dir(layout.root, model, version)
        scoring = open_model(folder, layout.root)
        with _live_progress() as progress:
            result = predict_paths(
                [Path(p) for p in paths],
                scoring,
                layout.converted,
                gradcam_dir=gradcam,
                on_progress=progress,
            )
    except PredictError as error:
        fail(str(error))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = out or layout.predictions / f"predict-{stamp}" / "predictions.parquet"
    predictions_file = write_table(result.predictions, target)
    summary_file = write_table(result.summary, summary_path(target))
    rows = result.predictions
    scored = result.n_scored
    over = int((rows["predicted_class"] == scoring.positive_class).sum())
    reasons = rows["reason"].value_counts()
    set_aside = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
    typer.echo(
        f"{scored} of {len(rows)} images scored with model {scoring.version} at threshold "
        f"{scoring.threshold:.3f} (fixed at evaluation): {over} over the threshold "
        f"(P({scoring.positive_class}) >= {scoring.threshold:.3f})"
        + (f"; set aside: {set_aside}" if set_aside else "")
    )
    for line in _summary_lines(result.summary):
        typer.echo(line)
    typer.echo(f"predictions: {predictions_file}")
    typer.echo(f"summary: {summary_file}")
    if gradcam is not None:
        typer.echo(f"Grad-CAM overlays: {gradcam}")
    typer.echo(INTENDED_USE)
    if scored == 0:
        fail(f"nothing could be scored; the reasons are in {predictions_file}", code=1)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    model: ModelDir = None,
    version: Version = None,
    data_root: DataRoot = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Largest upload accepted (MB).", min=0.001)
    ] = 64.0,
) -> None:
    """Serve predictions over HTTP (FastAPI on uvicorn): a page at / to upload a scan and see
    P(tumour) and the Grad-CAM overlay, and a JSON API (/api/predict, /api/model, /healthz).
    Without --model / --version it follows the registry's champion. Research use only."""
    from braincls.predict.model import PredictError
    from braincls.serve.app import ServeConfig, run_server

    if model is not None and version is not None:
        fail("give --model or --version, not both")
    _quiet_defaults()
    config = ServeConfig(
        data_root=_data_root(data_root),
        model_dir=model,
        version=version,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
    )
    try:
        run_server(config, host=host, port=port)
    except PredictError as error:
        fail(str(error))


@app.command()
def ingest(
    collection: Annotated[str, typer.Argument(help="TCIA collection name, e.g. UPENN-GBM.")],
    data_root: DataRoot = None,
    base_url: BaseUrl = None,
    modality: Annotated[
        str, typer.Option("--modality", help="Modality filter ('' for all).")
    ] = "MR",
) -> None:
    """Ingest one collection: download and verify every new or changed series into <data root>/raw."""
    _quiet_defaults()
    from flows.ingest import ingest_flow

    with _live_progress():
        result = ingest_flow(
            collection, modality=modality, data_root=str(_data_root(data_root)), base_url=base_url
        )
    typer.echo(
        f"{collection}: {result['listed']} series listed, {result['downloaded']} downloaded, "
        f"{result['skipped']} already present; raw data in {result['raw_root']}"
    )


@app.command()
def retrain(
    collections: Annotated[list[str], typer.Argument(help="TCIA collection names.")],
    data_root: DataRoot = None,
    base_url: BaseUrl = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Labels table (CSV); default <data root>/labels.csv."),
    ] = None,
    image_size: ImageSize = 128,
    epochs: Epochs = None,
    skip_ingest: Annotated[
        bool, typer.Option("--skip-ingest", help="Train on the verified local copy only.")
    ] = False,
) -> None:
    """Ingest what is new in COLLECTIONS, then convert, train, evaluate and register a model."""
    from pydantic import ValidationError

    from braincls.config import PipelineConfig

    if labels is not None and not labels.is_file():
        fail(f"--labels: {labels}: labels table not found")
    try:
        config = PipelineConfig.model_validate(
            {
                "preprocess": {"image_size_px": image_size},
                "train": {"epochs": epochs} if epochs is not None else {},
            }
        )
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    _quiet_defaults()
    from flows.retrain import retrain_flow

    with _stage_failures(), _live_progress():
        result = retrain_flow(
            collections=list(collections),
            data_root=str(_data_root(data_root)),
            base_url=base_url,
            labels=str(labels.resolve()) if labels is not None else None,
            config=config,
            skip_ingest=skip_ingest,
        )
    _echo_result(result)


@app.command()
def watch(
    collections: Annotated[
        list[str] | None,
        typer.Argument(help="Collections to watch (default: those already ingested)."),
    ] = None,
    data_root: DataRoot = None,
    base_url: BaseUrl = None,
    full_check: Annotated[
        bool, typer.Option("--full-check", help="List every watched collection in full.")
    ] = False,
) -> None:
    """Check for new series of watched collections and ingest them here (in this process)."""
    _quiet_defaults()
    from flows.watch import watch_flow

    result = watch_flow(
        collections=list(collections) if collections else None,
        data_root=str(_data_root(data_root)),
        base_url=base_url,
        ingest_deployment=None,
        full_check=full_check,
    )
    for started in result["started"]:
        typer.echo(f"{started['collection']}: {started['series']} series; {started['flow_run']}")
    if not result["started"]:
        typer.echo(f"nothing new in {', '.join(result['watched'])}")


@app.command()
def demo(
    data_root: DataRoot = None,
    patients: Annotated[
        int, typer.Option("--patients", help="Phantom patients in the demo collection.", min=8)
    ] = 24,
    image_size: ImageSize = 96,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum training epochs.")] = 12,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the phantom data.")] = 0,
) -> None:
    """The whole job offline: serve a phantom DICOM collection on a local NBIA server, ingest it
    over HTTP, convert, validate, train, evaluate, register; then stop the server."""
    from braincls.config import PipelineConfig
    from devkit.nbia import serve
    from devkit.phantom.dicom import DEFAULT_COLLECTION, generate_dicom_collection

    root = _data_root(data_root)
    served = root / "demo" / "nbia"
    collection_dir = served / DEFAULT_COLLECTION
    if not collection_dir.is_dir():
        typer.echo(f"writing the demo collection ({patients} phantom patients) to {collection_dir}")
        generate_dicom_collection(collection_dir, n_patients=patients, seed=seed)
    config = PipelineConfig.model_validate(
        {"preprocess": {"image_size_px": image_size}, "train": {"epochs": epochs}}
    )
    _quiet_defaults()
    from flows.retrain import retrain_flow

    with serve(served) as server:
        typer.echo(f"local NBIA server on {server.url}")
        with _stage_failures(), _live_progress():
            result = retrain_flow(
                collections=[DEFAULT_COLLECTION],
                data_root=str(root),
                base_url=server.url,
                labels=str(collection_dir / "labels.csv"),
                config=config,
            )
    ingested = result["ingest"][DEFAULT_COLLECTION]
    typer.echo(
        f"ingested {ingested.get('downloaded', 0)} new series over HTTP; local NBIA server stopped"
    )
    _echo_result(result)


@app.command("nbia-serve")
def nbia_serve(
    root: Annotated[
        Path, typer.Option("--root", help="Folder of collection folders of DICOM files.")
    ],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: a free one).")] = 0,
    control: Annotated[
        bool,
        typer.Option("--control", help="Answer the fault-injection and reload endpoints."),
    ] = False,
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a non-loopback --host (no authentication)."),
    ] = False,
) -> None:
    """Serve DICOM folders as a local NBIA v4 API (TCIA stand-in) until Ctrl-C."""
    from devkit.nbia.server import is_loopback
    from devkit.nbia.server import main as serve_main

    if not root.is_dir():
        fail(f"--root: {root}: folder not found")
    if not allow_remote and not is_loopback(host):
        fail(
            f"--host {host}: the NBIA stand-in has no authentication; bind 127.0.0.1, or pass "
            "--allow-remote on a network you trust"
        )
    args = ["--root", str(root), "--host", host, "--port", str(port)]
    args += ["--control"] * control + ["--allow-remote"] * allow_remote
    raise typer.Exit(serve_main(args))


@app.command("setup")
def setup_server(
    tcia_limit: Annotated[
        int, typer.Option("--tcia-limit", help="Concurrent series downloads from TCIA.", min=1)
    ] = 2,
    webhook_url: Annotated[
        str | None,
        typer.Option(
            "--webhook-url",
            envvar="BRAINCLS_FAILURE_WEBHOOK_URL",
            help="POST a JSON message here when a braincls deployment run fails (optional).",
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)."),
    ] = None,
) -> None:
    """Prepare a Prefect server (idempotent): work pools cpu and gpu, the tcia limit, failure webhook."""
    _quiet_defaults()
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    from flows.ops import SetupError, setup_operations

    try:
        report = setup_operations(tcia_limit=tcia_limit, webhook_url=webhook_url)
    except SetupError as error:
        fail(str(error))
    typer.echo(f"Prefect server {report.api_url}:")
    for line in report.lines:
        typer.echo(f"  {line}")


models_app = typer.Typer(
    help="The model registry: versions, champion, promotion.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _registry(data_root: Path | None) -> ModelRegistry:
    from braincls.common.layout import DataLayout
    from braincls.registry.store import ModelRegistry

    return ModelRegistry(DataLayout(_data_root(data_root)).models)


@models_app.command("list")
def models_list(data_root: DataRoot = None) -> None:
    """List model versions with status and headline test metrics."""
    registry = _registry(data_root)
    versions = registry.list()
    if not versions:
        typer.echo("no models registered")
    for version in versions:
        metrics = version.metrics
        typer.echo(
            f"{version.version}  {version.status:<10}  roc_auc={metrics.get('roc_auc')}  "
            f"sensitivity={metrics.get('sensitivity')}  specificity={metrics.get('specificity')}"
        )


@models_app.command("show")
def models_show(version: str, data_root: DataRoot = None) -> None:
    """Print a version's model card."""
    from braincls.registry.store import UnknownVersionError

    try:
        typer.echo(registry_version(data_root, version).card_path.read_text())
    except UnknownVersionError as error:
        fail(str(error))


def registry_version(data_root: Path | None, version: str) -> ModelVersion:
    """One version of the registry under ``data_root``."""
    return _registry(data_root).get(version)


@models_app.command("promote")
def models_promote(version: str, data_root: DataRoot = None) -> None:
    """Make VERSION the champion (manual decision, recorded)."""
    from braincls.registry.store import RegistryError

    try:
        typer.echo(_registry(data_root).promote(version).summary)
    except RegistryError as error:
        fail(str(error))


@models_app.command("rollback")
def models_rollback(data_root: DataRoot = None) -> None:
    """Make the previous champion the champion again (recorded)."""
    from braincls.registry.store import RegistryError

    try:
        typer.echo(_registry(data_root).rollback().summary)
    except RegistryError as error:
        fail(str(error))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
