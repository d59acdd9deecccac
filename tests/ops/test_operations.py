"""braincls operated the production way, end to end, on this machine.

A real Prefect server on a free loopback port (own PREFECT_HOME and SQLite database), set up with
``braincls setup``, ``prefect.yaml`` deployed with ``prefect deploy --all``, a process worker on
the ``cpu`` pool, and the local NBIA server serving a small demo DICOM collection. The test starts
the ``ingest`` deployment the way an operator does (``prefect deployment run``), sees the
``braincls.ingest.new-data`` event start ``retrain-on-ingest``, reads the stage artifacts back
through the API, loads the finished pipeline run's dashboard page in headless Chromium, and
checks that a failed run calls the failure webhook. Everything it starts is stopped at the end,
also when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from headless_chromium import Chromium, find_chromium
from stack import PrefectApi, Processes, WebhookReceiver, free_port, wait_until
from tiny import TINY_CONFIG

from devkit.phantom.dicom import generate_dicom_collection

pytestmark = [pytest.mark.ops, pytest.mark.timeout(900)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTION = "BRAINCLS-PHANTOM"
#: Where the dashboard screenshot is kept (git-ignored).
SCREENSHOT_DIR = PROJECT_ROOT / "test-output" / "ops"


#: Artifact keys each run must publish (what tasks/*.py and flows/*.py create).
INGEST_KEYS = {"ingest-summary"}
PIPELINE_KEYS = {
    "ingest-summary",
    "conversion-summary",
    "split-counts",
    "validation-results",
    "validation-summary",
    "training-progress",
    "training-history",
    "evaluation-metrics",
    "evaluation-report",
    "confusion-matrix",
    "evaluation-report-file",
    "promotion-decision",
}
#: What the dashboard's Artifacts tab of the pipeline run must show.
DASHBOARD_KEYS = [
    "conversion-summary",
    "split-counts",
    "validation-results",
    "evaluation-metrics",
    "promotion-decision",
]
#: Training runs as the train-gpu deployment, on a process worker of the gpu pool (CPU here).
TRAIN_DEPLOYMENT = "train-model/train-gpu"


_STARTED = time.monotonic()


def _phase(what: str) -> None:
    """Say how far the test got, and when (shown with -s, and in the report of a failure)."""
    print(f"[ops +{time.monotonic() - _STARTED:5.0f} s] {what}", flush=True)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass
class Stack:
    api: PrefectApi
    api_url: str
    ui_url: str
    nbia_url: str
    data_root: Path
    env: dict[str, str]
    processes: Processes
    receiver: WebhookReceiver
    setup_outputs: list[str]

    def cli(self, *args: str, timeout_s: float = 300) -> str:
        """Run a command of the venv (``braincls``, ``prefect``) against the server."""
        done = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
        return output

    def run_deployment(self, name: str, **parameters: str) -> str:
        """``prefect deployment run NAME -p k=v ...``; return the new flow run's id."""
        args = ["prefect", "deployment", "run", name]
        for key, value in parameters.items():
            args += ["-p", f"{key}={value}"]
        output = self.cli(*args)
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        assert match, f"no flow run id in:\n{output}"
        return match.group(1)

    def diagnostics(self) -> str:
        return "\n".join(
            f"--- {name} log:\n{self.processes.log(name)}"
            for name in ("worker", "worker-gpu", "server")
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("ops")
    logs = base / "logs"
    logs.mkdir()
    processes = Processes(logs)
    api_port, nbia_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_EXTRA_LOGGERS="braincls",
        PREFECT_WORKER_QUERY_SECONDS="2",
        TF_CPP_MIN_LOG_LEVEL="2",
        BRAINCLS_PROJECT_ROOT=str(PROJECT_ROOT),
    )
    server_env = {
        **env,
        "PREFECT_HOME": str(base / "server-home"),
        # Where the dashboard finds the API, and the address links (webhook "url") point to.
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_UI_URL": f"http://127.0.0.1:{api_port}",
    }
    env["PREFECT_API_URL"] = api_url
    served = base / "served"
    data_root = base / "data"
    data_root.mkdir()
    # The workers run what the server asks for only under this data root and against this
    # API (a run's parameters, and the retrain trigger's event payload, cannot choose others).
    env["BRAINCLS_ALLOWED_DATA_ROOTS"] = str(data_root)
    env["BRAINCLS_ALLOWED_TCIA_BASE_URLS"] = f"http://127.0.0.1:{nbia_port}/nbia-api/services/v4/"
    receiver = WebhookReceiver().__enter__()
    try:
        # The server takes longest to start: start it first, make the demo data meanwhile.
        processes.start(
            "server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--analytics-off",
            ],
            server_env,
        )
        # 12 small phantom patients: enough for a split by patient with every class everywhere.
        generate_dicom_collection(
            served / COLLECTION, n_patients=12, seed=1, image_size_px=64, slices_per_series=(6, 8)
        )
        # The labels table goes where the retrain flow looks by default: <data root>/labels.csv.
        shutil.copy(served / COLLECTION / "labels.csv", data_root / "labels.csv")
        processes.start(
            "nbia",
            [str(BIN / "braincls"), "nbia-serve", "--root", str(served), "--port", str(nbia_port)],
            env,
        )
        _phase("demo collection written, NBIA server started")
        api = PrefectApi(api_url)
        wait_until(
            api.healthy,
            180,
            "the Prefect server's /api/health",
            1.0,
            lambda: processes.log("server"),
        )
        stack = Stack(
            api=api,
            api_url=api_url,
            ui_url=f"http://127.0.0.1:{api_port}",
            nbia_url=f"http://127.0.0.1:{nbia_port}/nbia-api/services/v4/",
            data_root=data_root,
            env=env,
            processes=processes,
            receiver=receiver,
            setup_outputs=[],
        )
        _phase("Prefect server healthy")
        # Twice: the second run must find everything in place.
        for _ in range(2):
            stack.setup_outputs.append(
                stack.cli("braincls", "setup", "--tcia-limit", "2", "--webhook-url", receiver.url)
            )
        _phase("braincls setup done twice")
        stack.cli("prefect", "--no-prompt", "deploy", "--all")
        _phase("prefect.yaml deployed")
        for pool, name in (("cpu", "worker"), ("gpu", "worker-gpu")):
            processes.start(
                name,
                [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                env,
                cwd=base,
            )
        yield stack
    finally:
        processes.stop_all()
        receiver.__exit__(None, None, None)
        print(f"\nops test logs: {logs}")


@dataclass
class PipelineRuns:
    ingest_id: str
    failing_ingest_id: str
    retrain: dict[str, Any]
    retrain_state: dict[str, Any]
    ingest_state: dict[str, Any]
    failing_state: dict[str, Any]


@pytest.fixture(scope="module")
def runs(stack: Stack) -> PipelineRuns:
    """Start an ingest with new data (and one bound to fail); wait for the retraining it starts."""
    retrain_on_ingest = stack.api.deployment("retrain", "retrain-on-ingest")
    # An operator's parameter override on the deployment (UI: Edit deployment): tiny training.
    stack.api.patch(
        f"deployments/{retrain_on_ingest['id']}",
        {"parameters": {"config": TINY_CONFIG, "train_deployment": TRAIN_DEPLOYMENT}},
    )
    ingest_id = stack.run_deployment(
        "ingest/ingest",
        collection=COLLECTION,
        base_url=stack.nbia_url,
        data_root=str(stack.data_root),
    )
    # The same through the REST API (what a script or another system would call).
    ingest = stack.api.deployment("ingest", "ingest")
    failing_ingest_id = stack.api.post(
        f"deployments/{ingest['id']}/create_flow_run",
        {
            "parameters": {
                "collection": COLLECTION,
                "base_url": stack.nbia_url,
                "data_root": str(stack.data_root),
                "filters": {"Bogus": "1"},
            }
        },
    )["id"]
    _phase("ingest runs started")
    ingest_state = stack.api.final_state(ingest_id, 300, stack.diagnostics)
    _phase("ingest run completed")
    assert ingest_state["type"] == "COMPLETED", ingest_state.get("message")
    retrain = wait_until(
        lambda: stack.api.flow_runs(deployment_id={"any_": [retrain_on_ingest["id"]]}),
        60,
        "the retrain-on-ingest run the ingest's event should start",
        1.0,
        stack.diagnostics,
    )
    assert len(retrain) == 1, [run["name"] for run in retrain]
    _phase(f"retrain-on-ingest run {retrain[0]['name']} started by the event")
    retrain_state = stack.api.final_state(
        retrain[0]["id"],
        600,
        lambda: stack.api.run_logs(retrain[0]["id"]) + "\n" + stack.diagnostics(),
    )
    assert retrain_state["type"] == "COMPLETED", (
        f"{retrain_state.get('message')}\n{stack.api.run_logs(retrain[0]['id'])}"
    )
    _phase("retraining completed")
    failing_state = stack.api.final_state(failing_ingest_id, 120, stack.diagnostics)
    return PipelineRuns(
        ingest_id=ingest_id,
        failing_ingest_id=failing_ingest_id,
        retrain=stack.api.flow_run(retrain[0]["id"]),
        retrain_state=retrain_state,
        ingest_state=ingest_state,
        failing_state=failing_state,
    )


def test_setup_creates_pools_limit_and_failure_automation_once(stack: Stack) -> None:
    first, second = stack.setup_outputs
    assert "work pool cpu: created (process)" in first
    assert "work pool gpu: created (process)" in first
    assert "automation braincls-run-failed: created" in first
    assert "work pool cpu: present (process), left as it is" in second
    assert "automation braincls-run-failed: updated" in second
    pools = {pool["name"]: pool for pool in stack.api.post("work_pools/filter", {})}
    assert {"cpu", "gpu"} <= set(pools)
    assert pools["cpu"]["type"] == pools["gpu"]["type"] == "process"
    limit = stack.api.get("v2/concurrency_limits/tcia")
    assert (limit["limit"], limit["active"]) == (2, True)
    # One retraining at a time across both retrain deployments.
    retrain = stack.api.get("v2/concurrency_limits/braincls-retrain")
    assert (retrain["limit"], retrain["active"]) == (1, True)
    assert "global concurrency limit braincls-retrain: 1" in first
    automations = [
        automation
        for automation in stack.api.post("automations/filter", {})
        if automation["name"] == "braincls-run-failed"
    ]
    assert len(automations) == 1
    trigger = automations[0]["trigger"]
    assert set(trigger["expect"]) == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
    }
    assert automations[0]["actions"][0]["type"] == "call-webhook"
    block = stack.api.get(f"block_documents/{automations[0]['actions'][0]['block_document_id']}")
    assert block["name"] == "braincls-failure-webhook"


def test_deployments_schedules_pools_and_trigger_match_prefect_yaml(stack: Stack) -> None:
    from flows.ops import DEPLOYMENT_NAMES

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    assert tuple(d["name"] for d in spec["deployments"]) == DEPLOYMENT_NAMES
    expected = {
        ("retrain", "scheduled-retrain"): ("cpu", "0 3 * * 1"),
        ("retrain", "retrain-on-ingest"): ("cpu", None),
        ("ingest", "ingest"): ("cpu", None),
        ("watch-tcia", "watch-tcia"): ("cpu", "0 2 * * *"),
        ("train-model", "train-gpu"): ("gpu", None),
    }
    for (flow_name, name), (pool, cron) in expected.items():
        deployment = stack.api.deployment(flow_name, name)
        assert deployment["work_pool_name"] == pool, name
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
        ]
        schedules = [s["schedule"] for s in deployment["schedules"] if s["active"]]
        if cron is None:
            assert schedules == [], name
        else:
            assert schedules == [{"cron": cron, "timezone": "UTC", "day_or": True}], name
    # The run form: typed, described parameters from the flows' docstrings.
    ingest = stack.api.deployment("ingest", "ingest")["parameter_openapi_schema"]
    assert ingest["required"] == ["collection"]
    assert ingest["properties"]["collection"]["type"] == "string"
    assert ingest["properties"]["collection"]["description"].startswith("TCIA collection name")
    retrain = stack.api.deployment("retrain", "scheduled-retrain")
    # No demo collection against the real archive: what is already ingested, by default.
    assert "collections" not in retrain["parameters"]
    assert "collections" not in stack.api.deployment("watch-tcia", "watch-tcia")["parameters"]
    collections = retrain["parameter_openapi_schema"]["properties"]["collections"]
    assert {"items": {"type": "string"}, "type": "array"} in collections["anyOf"]
    trigger = [
        automation
        for automation in stack.api.post("automations/filter", {})
        if automation["name"].startswith("retrain-on-ingest")
    ]
    assert len(trigger) == 1
    assert trigger[0]["trigger"]["expect"] == ["braincls.ingest.new-data"]


def test_ingest_with_new_data_starts_retraining_on_what_it_ingested(
    stack: Stack, runs: PipelineRuns
) -> None:
    assert runs.retrain["parameters"]["collections"] == [COLLECTION]
    assert runs.retrain["parameters"]["data_root"] == str(stack.data_root)
    assert runs.retrain["parameters"]["base_url"] == stack.nbia_url
    assert runs.retrain["parameters"]["config"] == TINY_CONFIG
    assert runs.retrain["parameters"]["train_deployment"] == TRAIN_DEPLOYMENT
    ingest_keys = {a["key"] for a in stack.api.artifacts([runs.ingest_id])}
    assert ingest_keys >= INGEST_KEYS
    summary = next(a for a in stack.api.artifacts([runs.ingest_id]) if a["key"] == "ingest-summary")
    assert COLLECTION in summary["description"]
    # Raw DICOM and the model registry landed under the data root the ingest was given.
    assert any((stack.data_root / "raw" / COLLECTION).rglob("*.dcm"))
    assert (stack.data_root / "models" / "registry.json").is_file()


def test_retraining_publishes_every_stage_artifact(stack: Stack, runs: PipelineRuns) -> None:
    run_ids = [runs.retrain["id"]] + [r["id"] for r in stack.api.descendants(runs.retrain["id"])]
    keys = {artifact["key"] for artifact in stack.api.artifacts(run_ids)}
    assert keys >= PIPELINE_KEYS, f"missing {PIPELINE_KEYS - keys}"
    # Training ran as the train-gpu deployment on the gpu pool, inside this retraining.
    trainings = [run for run in stack.api.descendants(runs.retrain["id"]) if run["deployment_id"]]
    assert [run["deployment_id"] for run in trainings] == [
        stack.api.deployment("train-model", "train-gpu")["id"]
    ]
    assert trainings[0]["work_pool_name"] == "gpu"
    assert trainings[0]["state"]["type"] == "COMPLETED"
    # The retraining's own ingest found nothing new: no second retraining was started.
    retrains = stack.api.flow_runs(
        deployment_id={"any_": [stack.api.deployment("retrain", "retrain-on-ingest")["id"]]}
    )
    assert len(retrains) == 1


def test_dashboard_shows_the_finished_pipeline_runs_artifacts(
    stack: Stack, runs: PipelineRuns, tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None:
        message = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    # The run that owns the pipeline's artifacts (the retraining run or its pipeline subflow).
    run_ids = [runs.retrain["id"]] + [r["id"] for r in stack.api.descendants(runs.retrain["id"])]
    owner_id = next(
        a["flow_run_id"] for a in stack.api.artifacts(run_ids) if a["key"] == "promotion-decision"
    )
    owner = stack.api.flow_run(owner_id)
    assert owner["state"]["type"] == "COMPLETED"
    with Chromium(chromium, tmp_path / "chromium", window=(1440, 1800)) as browser:
        browser.open(f"{stack.ui_url}/runs/flow-run/{owner_id}")
        browser.wait_for_text([owner["name"], "Completed", "Artifacts"], timeout_s=90)
        browser.click_text("Artifacts")
        # The tab's own panel (the run graph above it also labels artifacts by key).
        text = browser.wait_for_text(
            ["Task runs", *DASHBOARD_KEYS], timeout_s=90, selector=".flow-run-artifacts"
        )
        shot = browser.screenshot(SCREENSHOT_DIR / "dashboard-pipeline-run-artifacts.png")
    _phase(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in DASHBOARD_KEYS:
        assert key in text


def test_failed_run_says_what_to_do_and_calls_the_failure_webhook(
    stack: Stack, runs: PipelineRuns
) -> None:
    assert runs.failing_state["type"] == "FAILED"
    assert "unknown filter(s) ['Bogus']" in runs.failing_state["message"]
    assert "What to do:" in runs.failing_state["message"]
    body = wait_until(
        lambda: next(
            (b for b in stack.receiver.bodies if b.get("flow_run_id") == runs.failing_ingest_id),
            None,
        ),
        60,
        "the failure webhook call",
        1.0,
        lambda: f"received: {stack.receiver.raw}",
    )
    assert body["state"] == "Failed"
    assert body["deployment"] == "ingest/ingest"
    assert body["message"] == runs.failing_state["message"]
    assert body["parameters"]["filters"] == {"Bogus": "1"}
    assert body["url"] == f"{stack.ui_url}/runs/flow-run/{runs.failing_ingest_id}"
    assert body["text"].startswith("braincls: flow run ")
    # Only failures are reported: the completed ingest and retraining sent nothing.
    reported = {b.get("flow_run_id") for b in stack.receiver.bodies}
    assert runs.ingest_id not in reported
    assert runs.retrain["id"] not in reported
