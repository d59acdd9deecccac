"""Watch TCIA (or the local NBIA stand-in) for new collections and series; start ingests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from braincls.config import DEFAULT_MODALITY, Settings, TciaConfig
from braincls.ingest.collection import last_complete_ingest, local_collections
from flows.guard import check_deployment_run
from tasks.ingest import check_for_new_series


@flow(name="watch-tcia", log_prints=True, timeout_seconds=6 * 3600)
def watch_flow(
    collections: list[str] | None = None,
    data_root: str = "data",
    base_url: str | None = None,
    ingest_deployment: str | None = "ingest/ingest",
    modality: str = DEFAULT_MODALITY,
    full_check: bool = False,
    config: TciaConfig | None = None,
) -> dict[str, Any]:
    """Find watched collections with new or changed series and start an ingest for each.

    Args:
        collections: collection names to watch (default: every collection already ingested
            under the data root).
        data_root: the data root whose ``raw/`` holds the verified local state.
        base_url: NBIA v4 API base URL (default: ``BRAINCLS_TCIA_BASE_URL`` or TCIA's).
        ingest_deployment: start each ingest as a run of this deployment (returns at once;
            the runs show on the dashboard); empty to ingest in this flow run instead.
        modality: Modality filter of the ingests (empty for all).
        full_check: list every watched collection in full instead of asking the server for
            series updated since each collection's last complete ingest (slower; also
            catches size-only changes).
        config: client timeouts, retries and politeness.
    """
    logger = get_run_logger()
    cfg = config or TciaConfig()
    url = base_url or Settings().tcia_base_url
    root = str(Path(data_root).resolve())
    check_deployment_run(root, url)
    raw_root = Path(root) / "raw"
    watched = list(collections) if collections else local_collections(raw_root)
    if not watched:
        raise ValueError(
            f"{raw_root}: nothing to watch: no collection has been ingested there yet; "
            "pass collections=[...] or ingest one first"
        )
    filters = {"Modality": modality} if modality else {}
    # Per collection: updates since the day before its last complete ingest (the server
    # compares release dates by day). A collection whose last ingest failed or was partial,
    # or that was never ingested, has none and is listed in full until an ingest completes.
    since: dict[str, dt.date | None] | None = None
    if not full_check:
        since = {}
        for name in watched:
            last = last_complete_ingest(raw_root, name, modality)
            since[name] = last - dt.timedelta(days=1) if last else None
    report = check_for_new_series(watched, filters, str(raw_root), url, cfg, since)
    started: list[dict[str, Any]] = []
    for plan in report.plans:
        parameters = {
            "collection": plan.collection,
            "modality": modality,
            "data_root": root,
            "base_url": url,
        }
        if ingest_deployment:
            from prefect.deployments import run_deployment

            run = run_deployment(ingest_deployment, parameters=parameters, timeout=0)
            started.append(
                {
                    "collection": plan.collection,
                    "series": len(plan.to_download),
                    "flow_run": run.name,
                }
            )
        else:
            from flows.ingest import ingest_flow

            result = ingest_flow(**parameters, config=cfg)
            started.append(
                {
                    "collection": plan.collection,
                    "series": len(plan.to_download),
                    "flow_run": f"in-process: {result['downloaded']} downloaded",
                }
            )
    create_table_artifact(
        key="watch-tcia",
        table=started or [{"collection": "(none)", "series": 0, "flow_run": "nothing new"}],
        description=(
            f"Watched {', '.join(report.watched)}; missing on the server: "
            f"{', '.join(report.missing) or 'none'}; checked since: {_since_text(since)}"
        ),
    )
    for name in report.missing:
        logger.warning("watched collection %s is not listed by the server", name)
    logger.info("%d ingest(s) started for %d watched collections", len(started), len(watched))
    return {
        "watched": list(report.watched),
        "missing": list(report.missing),
        "new_collections": list(report.new_collections),
        "started": started,
        "since": None
        if since is None
        else {name: date.isoformat() if date else None for name, date in since.items()},
    }


def _since_text(since: dict[str, dt.date | None] | None) -> str:
    if since is None:
        return "the beginning (full check)"
    return ", ".join(
        f"{name} {date.isoformat() if date else 'the beginning'}" for name, date in since.items()
    )
