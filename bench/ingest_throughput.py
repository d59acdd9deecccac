"""Ingest throughput: the verifying NBIA client against a naive sequential download loop.

Builds (or takes) a synthetic MR collection of at least 2,000 instances, serves it with the
local NBIA server in a separate process, then in the same run:

1. ingests it with :mod:`braincls.ingest` (2 concurrent downloads, full verification, atomic
   placement, verification records);
2. downloads it with a naive sequential loop (plain httpx ``getImage`` + unzip, no checks);
3. adds 10% new series, reloads the server and ingests again (only the new series move);
4. ingests once more with nothing new.

Usage::

    .venv/bin/python bench/ingest_throughput.py [--instances 2000] [--size-px 64] [--root DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from braincls.ingest import NbiaClient, ingest_collection  # noqa: E402
from devkit.nbia.synthetic import write_synthetic_collection  # noqa: E402

COLLECTION = "Bench-MR"
SERIES_PER_PATIENT = 2


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    """The local NBIA server in its own process (so that it does not share our GIL)."""
    process = subprocess.Popen(
        # --control: the benchmark reloads the catalogue over HTTP after adding patients.
        [sys.executable, "-m", "devkit.nbia.server", "--root", str(root), "--control"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("NBIA v4 API at "):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, line.split()[4]


def naive_download(url: str, dest: Path) -> tuple[float, int]:
    """One sequential loop: list, then getImage and unzip each series, no verification."""
    started = time.monotonic()
    total_bytes = 0
    with httpx.Client(timeout=60) as http:
        for row in http.get(url + "getSeries", params={"Collection": COLLECTION}).json():
            uid = row["SeriesInstanceUID"]
            response = http.get(
                url + "getImage", params={"SeriesInstanceUID": uid, "NewFileNames": "Yes"}
            )
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                archive.extractall(dest / uid)
            total_bytes += int(row["FileSize"])
    return time.monotonic() - started, total_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000, help="instances to generate")
    parser.add_argument("--per-series", type=int, default=20, help="instances per series")
    parser.add_argument("--size-px", type=int, default=64, help="rows = columns of each slice")
    parser.add_argument("--root", type=Path, help="served root to build into (default: temp)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="braincls-bench-") as scratch:
        work = Path(scratch)
        root = args.root or work / "served"
        per_patient = SERIES_PER_PATIENT * args.per_series
        patients = max(1, -(-args.instances // per_patient))
        started = time.monotonic()
        write_synthetic_collection(
            root,
            COLLECTION,
            n_patients=patients,
            series_per_patient=SERIES_PER_PATIENT,
            instances_per_series=args.per_series,
            rows=args.size_px,
            columns=args.size_px,
        )
        built_seconds = time.monotonic() - started
        instances = patients * per_patient
        print(
            f"collection: {patients * SERIES_PER_PATIENT} series, {instances} instances of "
            f"{args.size_px}x{args.size_px} px (built in {built_seconds:.1f} s)"
        )
        process, url = start_server(root)
        try:
            with NbiaClient(url, max_concurrent_downloads=2) as client:
                full = ingest_collection(client, COLLECTION, work / "raw")
                if not full.ok:
                    raise RuntimeError(f"ingest failed: {full.failure_rows()}")
                naive_seconds, naive_bytes = naive_download(url, work / "naive")

                new_patients = max(1, patients // 10)
                write_synthetic_collection(
                    root,
                    COLLECTION,
                    first_patient=patients + 1,
                    n_patients=new_patients,
                    series_per_patient=SERIES_PER_PATIENT,
                    instances_per_series=args.per_series,
                    rows=args.size_px,
                    columns=args.size_px,
                )
                control = url.split("/nbia-api/")[0] + "/braincls-control/reload"
                httpx.post(control, timeout=120).raise_for_status()
                incremental = ingest_collection(client, COLLECTION, work / "raw")
                nothing_new = ingest_collection(client, COLLECTION, work / "raw")
        finally:
            process.terminate()
            process.wait(timeout=10)

    megabytes = full.dicom_bytes / 1e6
    results = {
        "instances": instances,
        "series": full.listed,
        "dicom_megabytes": round(megabytes, 2),
        "client_seconds": round(full.seconds, 3),
        "client_megabytes_per_second": round(full.megabytes_per_second, 2),
        "naive_seconds": round(naive_seconds, 3),
        "naive_megabytes_per_second": round(naive_bytes / 1e6 / naive_seconds, 2),
        "client_over_naive_time_ratio": round(full.seconds / naive_seconds, 3),
        "incremental_new_series": incremental.downloaded,
        "incremental_seconds": round(incremental.seconds, 3),
        "incremental_fraction_of_full": round(incremental.seconds / full.seconds, 3),
        "nothing_new_seconds": round(nothing_new.seconds, 3),
        "nothing_new_downloaded": nothing_new.downloaded,
    }
    print(
        f"client (2 concurrent, verified): {full.seconds:7.2f} s  {full.megabytes_per_second:6.2f} MB/s"
    )
    print(
        f"naive sequential loop:           {naive_seconds:7.2f} s  "
        f"{results['naive_megabytes_per_second']:6.2f} MB/s"
    )
    print(f"time ratio client / naive:       {results['client_over_naive_time_ratio']:.3f}")
    print(
        f"incremental (+{incremental.downloaded} series):      {incremental.seconds:7.2f} s  "
        f"= {results['incremental_fraction_of_full']:.3f} of the full ingest"
    )
    print(
        f"re-ingest with nothing new:      {nothing_new.seconds:7.2f} s, {nothing_new.downloaded} downloaded"
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
