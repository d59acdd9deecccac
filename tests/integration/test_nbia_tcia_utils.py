"""A third-party NBIA client, tcia_utils (kirbyju/tcia_utils), pointed at the local server works
unchanged. Its base URL is fixed to *.cancerimagingarchive.net, so `setApiUrl` is replaced, as
its own call sites look it up at call time."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.nbia import NbiaServer, serve
from devkit.nbia.synthetic import write_synthetic_collection

# tcia_utils calls logging.basicConfig() at import; undo that for the rest of the session.
_root = logging.getLogger()
_handlers, _level = list(_root.handlers), _root.level
nbia = pytest.importorskip("tcia_utils.nbia")
_root.handlers[:] = _handlers
_root.setLevel(_level)

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")

PGBM_SERIES = "1.3.6.1.4.1.14519.5.2.1.4429.7055.197322826283777183783875680644"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, real_dicom_dir: Path) -> Iterator[NbiaServer]:
    root = tmp_path_factory.mktemp("nbia-root")
    pgbm = root / "Brain-Tumor-Progression"
    pgbm.mkdir()
    for source in sorted((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir()):
        (pgbm / source.name).symlink_to(source)
    (pgbm / "catalogue.json").write_text('{"DateReleased": "2018-07-13"}')
    write_synthetic_collection(
        root,
        "Synth-MR",
        n_patients=2,
        series_per_patient=1,
        instances_per_series=3,
        catalogue={"DateReleased": "2024-03-01"},
    )
    with serve(root) as running:
        yield running


@pytest.fixture()
def tcia(server: NbiaServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(nbia, "setApiUrl", lambda endpoint, api_url="": server.url)
    return nbia


def test_listing_functions(tcia: Any) -> None:
    assert sorted(row["Collection"] for row in tcia.getCollections()) == [
        "Brain-Tumor-Progression",
        "Synth-MR",
    ]
    series = tcia.getSeries(collection="Brain-Tumor-Progression", modality="MR")
    assert [(row["SeriesInstanceUID"], row["ImageCount"]) for row in series] == [(PGBM_SERIES, 24)]
    assert len(tcia.getUpdatedSeries("2024/02/29")) == 2  # tcia_utils sends MM-DD-YYYY
    assert tcia.getSeries(collection="No-Such-Collection") is None  # empty body: "no results"
    assert tcia.getSeriesSize(PGBM_SERIES)[0]["ObjectCount"] == 24
    assert len(tcia.getSopInstanceUids(PGBM_SERIES)) == 24
    assert [row["PatientId"] for row in tcia.getPatient("Brain-Tumor-Progression")] == ["PGBM-001"]
    assert tcia.getModality("Synth-MR") == [{"Modality": "MR"}]
    frame = tcia.getSeries(collection="Synth-MR", format="df")
    assert frame.shape[0] == 2


def test_download_series_default_and_md5_modes(
    tcia: Any, tmp_path: Path, real_dicom_dir: Path
) -> None:
    series = tcia.getSeries(collection="Brain-Tumor-Progression")
    metadata = tcia.downloadSeries(series, path=str(tmp_path / "named"), format="df")
    folder = tmp_path / "named" / PGBM_SERIES
    assert sorted(p.name for p in folder.iterdir()) == [
        *(f"1-{i:02d}.dcm" for i in range(1, 25)),
        "LICENSE",
    ]
    source = real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001"
    assert (folder / "1-24.dcm").read_bytes() == (source / "1-24.dcm").read_bytes()
    # format="df" posts getSeriesMetadata and parses the quoted CSV.
    assert metadata["SeriesInstanceUID"].tolist() == [PGBM_SERIES]
    assert int(metadata["ImageCount"].iloc[0]) == 24

    tcia.downloadSeries([PGBM_SERIES], path=str(tmp_path / "hashed"), input_type="list", hash="y")
    hashed = tmp_path / "hashed" / PGBM_SERIES
    lines = (hashed / "md5hashes.csv").read_text().splitlines()
    assert lines[0] == "Filename,MD5Hash"
    for line in lines[1:]:
        name, digest = line.split(",")
        assert hashlib.md5((hashed / name).read_bytes()).hexdigest() == digest
    assert len(lines) == 25
