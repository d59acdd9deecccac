"""DICOM conversion throughput: braincls against dicom2jpg and against the decode+encode floor.

Builds a corpus of real MR instances (the 200 files of ``../shared/data/dicom`` copied
``--copies`` times, each copy with its own Patient ID, UIDs and series numbers, so nothing is a
duplicate), then, each in a fresh process on the same files:

- ``braincls-1`` / ``braincls-N``: :func:`braincls.convert.convert_tree` with 1 and N workers
  (discovery with MD5 and header, conversion, manifests), empty output root;
- ``braincls-rerun``: the same call again (every series cached);
- ``floor-1`` / ``floor-N``: ``pydicom.dcmread`` + ``pixel_array`` + one ``cv2.imencode`` PNG
  of the native array, written to disk, nothing else (1 process, and N processes);
- ``dicom2jpg-1`` / ``dicom2jpg-N``: ``dicom2jpg.dicom2png`` (single process, and its own
  process pool with one worker per CPU), from the separate venv ``bench/.venv-dicom2jpg``.

Throughput is instances per second of wall time, timed after the imports. The machine may
be shared, so the CPU time of the whole process tree (sampled from /proc every 20 ms) minus
the measured process's import time is reported too, and peak RSS: the largest single process
and the sum over the tree at its peak (shared pages of forked workers count once per process).

Setup of the comparison package (not a project dependency)::

    python3 -m venv bench/.venv-dicom2jpg && bench/.venv-dicom2jpg/bin/pip install dicom2jpg

Usage::

    .venv/bin/python bench/convert_throughput.py [--copies 5] [--workers 2] [--repeat 2] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

REAL_DICOM = PROJECT_ROOT.parent / "shared" / "data" / "dicom"
DICOM2JPG_PYTHON = PROJECT_ROOT / "bench" / ".venv-dicom2jpg" / "bin" / "python"
RESULTS = PROJECT_ROOT / "bench" / "results" / "convert_throughput.json"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------
# Corpus


def build_corpus(root: Path, copies: int) -> int:
    """Copy the real series ``copies`` times with fresh identities; return the instance count."""
    import pydicom
    from pydicom.uid import generate_uid

    count = 0
    for copy in range(copies):
        for path in sorted(REAL_DICOM.rglob("*.dcm")):
            ds = pydicom.dcmread(path)
            salt = f"bench-copy-{copy}"
            for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
                uid = generate_uid(entropy_srcs=[str(ds.get(keyword)), salt])
                setattr(ds, keyword, uid)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = f"{ds.PatientID}-copy{copy}"
            ds.SeriesNumber = copy * 1000 + int(ds.get("SeriesNumber", 0) or 0)
            target = root / f"copy{copy}" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            count += 1
    return count


# ------------------------------------------------------------------------------------------
# The measured runs (each in its own process)


def _run_braincls(src: Path, out: Path, workers: int) -> int:
    from braincls.config import ConvertConfig
    from braincls.convert import LabelTable, convert_tree

    labels = LabelTable(by_collection={"*": "unknown"})
    # Synthetic phantoms: no Patient ID to protect (and no salt needed to measure speed).
    config = ConvertConfig(pseudonymize_patient_id=False)
    result = convert_tree(src, out, config, labels, workers=workers)
    return result.files


def _floor_files(files: list[str], out: str) -> int:
    import cv2
    import pydicom

    for index, name in enumerate(files):
        array = pydicom.dcmread(name).pixel_array
        ok, buffer = cv2.imencode(".png", array)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {name}")
        Path(out, f"{os.getpid()}-{index}.png").write_bytes(buffer.tobytes())
    return len(files)


def _run_floor(src: Path, out: Path, workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    files = sorted(str(path) for path in src.rglob("*.dcm"))
    out.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        return _floor_files(files, str(out))
    chunks = [files[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_floor_files, chunks, [str(out)] * workers))


_DICOM2JPG_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
import dicom2jpg
src, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
Path(out).mkdir(parents=True, exist_ok=True)
import_cpu = time.process_time()
start = time.perf_counter()
dicom2jpg.dicom2png(src, out, multiprocessing=workers > 1)
seconds = time.perf_counter() - start
written = sum(1 for _ in Path(out).rglob("*.png"))
print(json.dumps({"seconds": seconds, "instances": written, "import_cpu_s": import_cpu,
                  "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _measure_child(mode: str, src: Path, out: Path, workers: int) -> None:
    """Entry point of a measured process: run ``mode`` and print a JSON line.

    Imports happen before the clock starts (dicom2jpg's are excluded the same way); the
    parent reports the whole process time beside it.
    """
    if mode == "braincls":
        import braincls.convert.tree  # noqa: F401
    import cv2  # noqa: F401
    import pydicom  # noqa: F401

    import_cpu = time.process_time()
    start = time.perf_counter()
    if mode == "braincls":
        instances = _run_braincls(src, out, workers)
    elif mode == "floor":
        instances = _run_floor(src, out, workers)
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "seconds": seconds,
        "instances": instances,
        "self_maxrss_kb": usage.ru_maxrss,
        "import_cpu_s": import_cpu,
    }
    print(json.dumps(report))


# ------------------------------------------------------------------------------------------
# Process-tree sampling


def _proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds, RSS bytes) of ``pid`` from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    parent = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss = int(fields[21]) * _PAGE
    return parent, cpu, rss


class TreeSampler(threading.Thread):
    """Samples CPU time and RSS of a process and all its descendants every 20 ms."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.cpu_by_pid: dict[int, float] = {}
        self.peak_tree_rss = 0
        self.peak_process_rss = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            stats = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    stat = _proc_stat(int(entry))
                    if stat is not None:
                        stats[int(entry)] = stat
            tree = {self.root_pid}
            grew = True
            while grew:
                grew = False
                for pid, (parent, _, _) in stats.items():
                    if parent in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            total = 0
            for pid in tree:
                if pid in stats:
                    _, cpu, rss = stats[pid]
                    self.cpu_by_pid[pid] = cpu
                    total += rss
                    self.peak_process_rss = max(self.peak_process_rss, rss)
            self.peak_tree_rss = max(self.peak_tree_rss, total)
            self.stopped.wait(0.02)


def measure(name: str, command: list[str]) -> dict[str, Any]:
    """Run ``command`` (which prints one JSON line), sampling its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    sampler = TreeSampler(process.pid)
    sampler.start()
    stdout, _ = process.communicate()
    process_seconds = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed with exit status {process.returncode}")
    report = json.loads(stdout.strip().splitlines()[-1])
    instances = int(report["instances"])
    seconds = float(report["seconds"])
    # CPU of the whole tree after the measured process finished its imports.
    cpu = sum(sampler.cpu_by_pid.values()) - float(report["import_cpu_s"])
    row: dict[str, Any] = {
        "run": name,
        "instances": instances,
        "seconds": round(seconds, 2),
        "process_seconds": round(process_seconds, 2),
        "instances_per_s": round(instances / seconds, 1),
        "work_cpu_s": round(cpu, 2),
        "instances_per_cpu_s": round(instances / cpu, 1) if cpu else None,
        "peak_process_rss_mb": round(sampler.peak_process_rss / 2**20, 1),
        "peak_tree_rss_mb": round(sampler.peak_tree_rss / 2**20, 1),
        "self_maxrss_mb": round(int(report["self_maxrss_kb"]) / 1024, 1),
    }
    print(
        f"{name:16s} {instances:5d} inst {seconds:7.2f} s {row['instances_per_s']:7} inst/s "
        f"cpu {cpu:6.2f} s  peak RSS process {row['peak_process_rss_mb']} MB, "
        f"tree {row['peak_tree_rss_mb']} MB",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=5, help="copies of the 200 real files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; the best wall and CPU time are kept"
    )
    parser.add_argument("--measure", nargs=4, metavar=("MODE", "SRC", "OUT", "WORKERS"))
    args = parser.parse_args()
    if args.measure:
        mode, src, out, workers = args.measure
        _measure_child(mode, Path(src), Path(out), int(workers))
        return

    if not REAL_DICOM.is_dir():
        raise SystemExit(f"real DICOM not found: {REAL_DICOM}")
    root = args.root or Path(tempfile.mkdtemp(prefix="braincls-convert-bench-"))
    corpus = root / "corpus"
    if not corpus.is_dir():
        started = time.perf_counter()
        count = build_corpus(corpus, args.copies)
        print(f"corpus: {count} instances in {time.perf_counter() - started:.1f} s at {corpus}")
    n = args.workers
    me = [sys.executable, str(Path(__file__).resolve()), "--measure"]
    runs: list[tuple[str, list[str], Path | None]] = []
    for name, mode, workers in (
        ("floor-1", "floor", 1),
        (f"floor-{n}", "floor", n),
        ("braincls-1", "braincls", 1),
        (f"braincls-{n}", "braincls", n),
    ):
        out = root / f"out-{name}"
        runs.append((name, [*me, mode, str(corpus), str(out), str(workers)], out))
    # Right after braincls-N, on its output: every series is cached.
    rerun_out = root / f"out-braincls-{n}"
    runs.append(("braincls-rerun", [*me, "braincls", str(corpus), str(rerun_out), str(n)], None))
    if DICOM2JPG_PYTHON.is_file():
        for name, workers in (("dicom2jpg-1", 1), (f"dicom2jpg-{n}", n)):
            out = root / f"out-{name}"
            script = [str(DICOM2JPG_PYTHON), "-c", _DICOM2JPG_SCRIPT]
            runs.append((name, [*script, str(corpus), str(out), str(workers)], out))
    else:
        print(f"dicom2jpg skipped: {DICOM2JPG_PYTHON} missing (see the module docstring)")

    best: dict[str, dict[str, Any]] = {}
    for round_index in range(args.repeat):
        print(f"round {round_index + 1} of {args.repeat}", flush=True)
        for name, command, out in runs:
            if out is not None:
                shutil.rmtree(out, ignore_errors=True)
            row = measure(name, command)
            kept = best.get(name)
            if kept is None:
                best[name] = row
                continue
            # Keep the fastest wall time and, separately, the lowest CPU time of the rounds.
            if float(row["seconds"]) < float(kept["seconds"]):
                row["work_cpu_s"] = min(row["work_cpu_s"], kept["work_cpu_s"])
                best[name] = row
            else:
                kept["work_cpu_s"] = min(row["work_cpu_s"], kept["work_cpu_s"])
    rows = list(best.values())
    for row in rows:
        cpu = float(row["work_cpu_s"])
        row["instances_per_cpu_s"] = round(int(row["instances"]) / cpu, 1) if cpu else None

    by_name = {str(row["run"]): row for row in rows}

    def ratio(first: str, second: str, key: str) -> float | None:
        if first not in by_name or second not in by_name:
            return None
        a, b = by_name[first][key], by_name[second][key]
        return round(float(a) / float(b), 2) if a and b else None

    ratios = {
        f"braincls-{n} vs dicom2jpg-{n} (speed-up, wall)": ratio(
            f"braincls-{n}", f"dicom2jpg-{n}", "instances_per_s"
        ),
        "braincls-1 vs dicom2jpg-1 (speed-up, wall)": ratio(
            "braincls-1", "dicom2jpg-1", "instances_per_s"
        ),
        "braincls-1 vs dicom2jpg-1 (speed-up, per CPU s)": ratio(
            "braincls-1", "dicom2jpg-1", "instances_per_cpu_s"
        ),
        "floor-1 / braincls-1 (slow-down, wall)": ratio("floor-1", "braincls-1", "instances_per_s"),
        f"floor-{n} / braincls-{n} (slow-down, wall)": ratio(
            f"floor-{n}", f"braincls-{n}", "instances_per_s"
        ),
        "floor-1 / braincls-1 (slow-down, per CPU s)": ratio(
            "floor-1", "braincls-1", "instances_per_cpu_s"
        ),
    }
    for key, value in ratios.items():
        print(f"{key}: {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"rows": rows, "ratios": ratios, "workers": n, "repeat": args.repeat}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
