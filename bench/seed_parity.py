"""Seed parity: the seed's CNN on full Br35H at 128 px, random split by file vs grouped split.

    .venv/bin/python bench/seed_parity.py [--images ../shared/data/br35h] [--out bench/results]

Each configuration runs in its own process (peak RSS is its own). Prints a markdown table and
writes bench/results/seed_parity.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(images: Path, data_root: Path, *extra: str) -> dict[str, object]:
    command = [
        sys.executable,
        str(HERE / "train_eval.py"),
        "--images",
        str(images),
        "--data-root",
        str(data_root),
        *extra,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def table(rows: list[dict[str, object]]) -> str:
    columns = [
        "profile",
        "model",
        "split",
        "epochs_run",
        "n_test",
        "accuracy_at_0_5",
        "accuracy",
        "roc_auc",
        "sensitivity",
        "specificity",
        "train_seconds",
        "train_images_per_second",
        "peak_rss_mb",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            f"{row[c]:.4f}"
            if isinstance(row[c], float)
            and c not in ("train_seconds", "train_images_per_second", "peak_rss_mb")
            else str(row[c])
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "br35h")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="braincls-bench-") as tmp:
        for split in ("random", "grouped"):
            rows.append(
                run(
                    args.images,
                    Path(tmp) / "data",
                    "--profile",
                    "seed",
                    "--split",
                    split,
                    "--epochs",
                    str(args.epochs),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_parity.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
