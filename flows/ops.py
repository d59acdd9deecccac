"""What a Prefect server needs before braincls deployments can run on it, created idempotently.

:func:`setup_operations` (``braincls setup``, ``make deploy``) makes sure the server has

- the work pools ``cpu`` and ``gpu`` (process type here; an existing pool is left as it is, so a
  pool an operator moved to Kubernetes or Docker keeps its type and base job template),
- the global concurrency limit ``tcia`` that caps concurrent series downloads
  (``tasks/ingest.py``; without it Prefect only warns and does not limit),
- the global concurrency limit ``braincls-retrain`` (one slot) that every retraining holds, so
  the two retrain deployments never train at once on their shared data root,
- when a webhook URL is given, a ``Webhook`` block and an automation that POSTs a JSON message to
  it whenever a flow run of a braincls deployment ends ``Failed``, ``Crashed`` or ``TimedOut``.

Running it again changes nothing but the limit value and the webhook URL it is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# The global concurrency limits held by every series download and every retraining.
from flows.retrain import RETRAIN_LIMIT
from tasks.ingest import TCIA_LIMIT

#: Work pools by name, with what runs on them.
WORK_POOLS: dict[str, str] = {
    "cpu": "braincls: ingest, TCIA watcher, retraining pipeline (CPU workers)",
    "gpu": "braincls: the training stage (workers on machines with a GPU)",
}

#: The deployments of ``prefect.yaml``; the failure automation watches runs of these.
DEPLOYMENT_NAMES: tuple[str, ...] = (
    "scheduled-retrain",
    "retrain-on-ingest",
    "ingest",
    "watch-tcia",
    "train-gpu",
)


WEBHOOK_BLOCK_NAME = "braincls-failure-webhook"
FAILURE_AUTOMATION_NAME = "braincls-run-failed"
FAILURE_EVENTS: tuple[str, ...] = (
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.TimedOut",
)

#: Environment variable read when no webhook URL is passed.
WEBHOOK_URL_ENV = "BRAINCLS_FAILURE_WEBHOOK_URL"

#: The JSON body POSTed to the webhook (a Jinja template rendered by the server). ``text`` makes
#: it readable as-is by Slack / Mattermost incoming webhooks; the other fields are for machines.
FAILURE_PAYLOAD = """{
  "text": {{ ("braincls: flow run " ~ flow_run.name ~ " of " ~ flow.name ~ "/" ~ deployment.name ~ " ended " ~ flow_run.state.name ~ ": " ~ flow_run.state.message ~ " " ~ (flow_run|ui_url)) | tojson }},
  "flow_run_id": {{ flow_run.id | string | tojson }},
  "flow_run_name": {{ flow_run.name | tojson }},
  "deployment": {{ (flow.name ~ "/" ~ deployment.name) | tojson }},
  "state": {{ flow_run.state.name | tojson }},
  "message": {{ flow_run.state.message | tojson }},
  "parameters": {{ flow_run.parameters | tojson }},
  "url": {{ flow_run|ui_url | tojson }},
  "occurred": {{ event.occurred | string | tojson }}
}"""


def masked_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host and port only. Chat services (Slack,
    Mattermost, Teams) put the credential in the path or the query, so the rest is masked."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "…"
    if not parts.scheme or not host:
        return "…"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


class SetupError(RuntimeError):
    """The Prefect server cannot be set up (not reachable, or not configured)."""


@dataclass
class SetupReport:
    """What :func:`setup_operations` found and did, one line per object."""

    api_url: str
    lines: list[str] = field(default_factory=list)


def _failure_automation(block_document_id: Any) -> Any:
    from prefect.automations import AutomationCore, CallWebhook, EventTrigger, Posture

    return AutomationCore(
        name=FAILURE_AUTOMATION_NAME,
        description=(
            "POST to the braincls failure webhook when a run of a braincls deployment "
            f"({', '.join(DEPLOYMENT_NAMES)}) ends Failed, Crashed or TimedOut. "
            "Managed by `braincls setup`."
        ),
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.name": list(DEPLOYMENT_NAMES),
            },
            expect=set(FAILURE_EVENTS),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=block_document_id, payload=FAILURE_PAYLOAD)],
    )


def setup_operations(
    *,
    tcia_limit: int = 2,
    webhook_url: str | None = None,
    pool_type: str = "process",
) -> SetupReport:
    """Create what is missing on the Prefect server at ``PREFECT_API_URL``; return a report.

    Args:
        tcia_limit: concurrent series downloads from TCIA allowed across all runs.
        webhook_url: where failure notifications are POSTed (default:
            ``$BRAINCLS_FAILURE_WEBHOOK_URL``; none configured: no automation is created).
        pool_type: worker type of work pools that do not exist yet.

    Raises:
        SetupError: no API URL is configured or the server does not answer.
    """
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings
    from prefect.workers.process import ProcessWorker

    if tcia_limit < 1:
        raise SetupError(f"the tcia limit must be at least 1, got {tcia_limit}")
    api_url = get_current_settings().api.url
    if not api_url:
        raise SetupError(
            "PREFECT_API_URL is not set: start a server (`make server`) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (setting up a temporary server is useless)"
        )
    report = SetupReport(api_url=str(api_url))
    webhook_url = webhook_url or os.environ.get(WEBHOOK_URL_ENV) or None
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise SetupError(
                f"the Prefect server at {api_url} does not answer ({problem}); start it with "
                "`make server` or fix PREFECT_API_URL"
            )
        for name, description in WORK_POOLS.items():
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                template = (
                    ProcessWorker.get_default_base_job_template()
                    if pool_type == "process"
                    else None
                )
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=pool_type,
                        description=description,
                        **({"base_job_template": template} if template else {}),
                    )
                )
                report.lines.append(f"work pool {name}: created ({pool_type})")
            else:
                report.lines.append(f"work pool {name}: present ({pool.type}), left as it is")
        client.upsert_global_concurrency_limit_by_name(TCIA_LIMIT, tcia_limit)
        report.lines.append(f"global concurrency limit {TCIA_LIMIT}: {tcia_limit}")
        # One retraining at a time, across both retrain deployments (they share a data root).
        client.upsert_global_concurrency_limit_by_name(RETRAIN_LIMIT, 1)
        report.lines.append(f"global concurrency limit {RETRAIN_LIMIT}: 1")
        if not webhook_url:
            if client.read_automations_by_name(FAILURE_AUTOMATION_NAME):
                report.lines.append(
                    f"automation {FAILURE_AUTOMATION_NAME}: present, left as it is (no new "
                    "webhook URL given)"
                )
            else:
                report.lines.append(
                    f"failure webhook: none configured (pass --webhook-url or set {WEBHOOK_URL_ENV})"
                )
            return report
        block_id = Webhook(
            method="POST",
            url=webhook_url,
            headers={"Content-Type": "application/json"},
        ).save(WEBHOOK_BLOCK_NAME, overwrite=True)
        automation = _failure_automation(block_id)
        existing = client.read_automations_by_name(FAILURE_AUTOMATION_NAME)
        if existing:
            client.update_automation(existing[0].id, automation)
            for duplicate in existing[1:]:
                client.delete_automation(duplicate.id)
            report.lines.append(f"automation {FAILURE_AUTOMATION_NAME}: updated")
        else:
            client.create_automation(automation)
            report.lines.append(f"automation {FAILURE_AUTOMATION_NAME}: created")
        report.lines.append(
            f"failure webhook: POST {masked_url(webhook_url)} (block {WEBHOOK_BLOCK_NAME})"
        )
    return report
