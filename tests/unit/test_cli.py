"""The CLI's bad-argument paths: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _braincls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braincls", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--images", "/nonexistent/folder"],
            "braincls: error: --images: /nonexistent/folder: image folder not found",
        ),
        (
            ["run", "--images", "{two}", "--model", "resnet9000"],
            "braincls: error: --model: unknown model 'resnet9000'; choose one of: ",
        ),
        (
            ["run", "--images", "{two}", "--split", "diagonal"],
            "braincls: error: --split: must be 'grouped' or 'random', got 'diagonal'",
        ),
        (
            ["run", "--images", "{two}", "--epochs", "0"],
            "braincls: error: train.epochs: Input should be greater than or equal to 1",
        ),
        (
            ["run", "--images", "{two}", "--image-size", "4"],
            "braincls: error: preprocess.image_size_px: Input should be greater than or equal to 8",
        ),
        (
            ["phantom", "--out", "{two}/x", "--n", "1"],
            "braincls: error: --n: at least 2 images are needed (one per class)",
        ),
        (["run"], "braincls: error: give at least one source: --images, --volumes or --dicom"),
        (
            ["run", "--images", "{two}", "--labels", "{two}/labels.csv"],
            "braincls: error: --labels: a labels table labels --dicom images; give --dicom too",
        ),
        (
            ["run", "--images", "{two}", "--sequence", "t1ce"],
            "braincls: error: --sequence: picks the sequences of --volumes; give --volumes too",
        ),
        (
            ["run", "--volumes", "{two}", "--sequence", "t1ce", "--sequence", "t1ce"],
            "braincls: error: volumes: Value error, sequences: t1ce is given twice",
        ),
        (
            ["run", "--dicom", "{two}/missing", "--labels", "{two}/labels.csv"],
            "braincls: error: --dicom: {two}/missing: folder not found",
        ),
        (
            ["run", "--volumes", "{two}/missing"],
            "braincls: error: --volumes: {two}/missing: folder not found",
        ),
        (
            ["evaluate", "--model", "{two}", "--dicom", "{two}", "--images", "{two}"],
            "braincls: error: give one of --images (an image folder), --dicom (DICOM) or "
            "--volumes (NIfTI)",
        ),
        (
            ["evaluate", "--model", "{two}", "--volumes", "{two}/missing"],
            "braincls: error: --volumes: {two}/missing: folder not found",
        ),
        (
            ["convert", "{two}", "--labels", "{two}/none.csv"],
            "braincls: error: --labels: {two}/none.csv: labels table not found",
        ),
        (
            ["evaluate", "--model", "{two}", "--dicom", "{two}", "--labels", "{two}/none.csv"],
            "braincls: error: --labels: {two}/none.csv: labels table not found",
        ),
        (
            ["retrain", "X", "--labels", "{two}/none.csv"],
            "braincls: error: --labels: {two}/none.csv: labels table not found",
        ),
        (
            ["nbia-serve", "--root", "{two}", "--host", "0.0.0.0"],
            "braincls: error: --host 0.0.0.0: the NBIA stand-in has no authentication; bind "
            "127.0.0.1, or pass --allow-remote on a network you trust",
        ),
        (
            ["predict", "{two}", "--out", "{two}/p.txt"],
            "braincls: error: --out: {two}/p.txt: write predictions to a .csv or .parquet file",
        ),
        (
            ["predict", "{two}", "--data-root", "{two}/data"],
            "braincls: error: no champion model under {two}/data/models: train one",
        ),
        (
            ["predict", "{two}", "--model", "{two}/none"],
            "braincls: error: {two}/none: model folder not found",
        ),
        (
            ["predict", "{two}", "--model", "{two}", "--version", "v0001"],
            "braincls: error: give a model folder or a registry version, not both",
        ),
        (
            ["serve", "--data-root", "{two}/data"],
            "braincls: error: no champion model under {two}/data/models: train one",
        ),
        (
            ["serve", "--model", "{two}", "--version", "v0001"],
            "braincls: error: give --model or --version, not both",
        ),
    ],
)
def test_bad_arguments_give_one_line(two_classes: Path, args: list[str], message: str) -> None:
    result = _braincls(*[a.replace("{two}", str(two_classes)) for a in args])
    assert result.returncode == 2
    assert result.stderr.startswith(message.replace("{two}", str(two_classes))), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_one_class_only_is_refused(tmp_path: Path) -> None:
    (tmp_path / "yes").mkdir()
    result = _braincls("run", "--images", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"braincls: error: --images: {tmp_path}: needs at least two class folders (e.g. yes/ "
        "and no/), found yes"
    )


def test_a_failed_stage_ends_the_command_with_its_message(
    two_classes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline stage that fails ends `braincls run` with one line and exit code 1."""
    from typer.testing import CliRunner

    import flows.pipeline
    from braincls.cli import app
    from flows.failures import StageFailed

    message = "validate failed: ValidationFailed: 3 blocking checks. What to do: fix the data"
    calls: list[dict[str, object]] = []

    def failing_pipeline(**parameters: object) -> None:
        calls.append(parameters)
        raise StageFailed(message)

    monkeypatch.setattr(flows.pipeline, "pipeline", failing_pipeline)
    for name in (
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_LOGGING_EXTRA_LOGGERS",
        "DO_NOT_TRACK",
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    result = CliRunner().invoke(app, ["run", "--images", str(two_classes)])
    assert result.exit_code == 1
    assert result.stderr == f"braincls: error: {message}\n"
    assert [call["images_dirs"] for call in calls] == [[str(two_classes.resolve())]]


def test_sources_and_settings_come_from_a_config_file_and_options_win(
    two_classes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import flows.pipeline
    from braincls.cli import app

    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources:\n  images: [{two_classes}]\n  volumes: [{tmp_path}]\n"
        "train:\n  epochs: 3\n  model: seed_cnn\nsplit:\n  seed: 9\n"
    )
    calls: list[dict[str, object]] = []

    def recording_pipeline(**parameters: object) -> dict[str, object]:
        calls.append(parameters)
        raise SystemExit(0)

    monkeypatch.setattr(flows.pipeline, "pipeline", recording_pipeline)
    for name in (
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_LOGGING_EXTRA_LOGGERS",
        "DO_NOT_TRACK",
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--epochs", "5"])
    assert result.exit_code == 0, result.output
    [call] = calls
    chosen = call["config"]
    assert chosen.sources.images == (str(two_classes),)  # type: ignore[attr-defined]
    assert chosen.sources.volumes == (str(tmp_path),)  # type: ignore[attr-defined]
    assert chosen.train.epochs == 5  # the option wins over the file  # type: ignore[attr-defined]
    assert chosen.train.model == "seed_cnn"  # type: ignore[attr-defined]
    assert chosen.split.seed == 9  # type: ignore[attr-defined]
    assert call["images_dirs"] is None


def test_a_bad_config_file_gives_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train: [1, 2\n")
    result = _braincls("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"braincls: error: --config: {config}: not valid YAML or JSON")


def test_converting_a_local_folder_without_a_salt_says_how_to_set_one(tmp_path: Path) -> None:
    from test_dicom_convert import make_mr, ramp, save

    save(make_mr(ramp()), tmp_path / "export" / "a.dcm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINCLS_PSEUDONYM_SALT")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "braincls",
            "convert",
            str(tmp_path / "export"),
            "--data-root",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "braincls: error: Patient IDs of this DICOM must be pseudonymised"
    ), result.stderr
    assert "Traceback" not in result.stderr
