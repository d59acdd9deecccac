"""Start and stop the real services of the operations test: Prefect server, worker, NBIA server.

Every process starts in its own session (process group) with SIGINT at its default, so that it
can be stopped with its children, gracefully first, whatever shell started the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

#: A flow run in one of these state types is over.
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _default_sigint() -> None:
    # A shell that starts jobs in the background makes them ignore SIGINT, and Prefect's CLI
    # stops its workers by sending itself SIGINT: restore the default so that SIGTERM works.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Processes:
    """Processes started by the test, stopped in reverse order by :meth:`stop_all`."""

    log_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` with stdout and stderr in ``<log_dir>/<name>.log``."""
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )
        self.started.append((name, process))
        return process

    def log(self, name: str, tail_chars: int = 4000) -> str:
        """The end of a process's log."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail_chars:] if path.exists() else ""

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM each process group, newest first; SIGKILL what is left after ``grace_s``,
        including descendants in sessions of their own (a worker's flow-run processes)."""
        descendants = [pid for _, process in self.started for pid in _descendants(process.pid)]
        for _, process in reversed(self.started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, process in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Children (e.g. a flow run the worker started) may outlive their parent.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            if process.poll() is None:
                process.wait(timeout=10)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.started.clear()


def _descendants(root_pid: int) -> list[int]:
    """PIDs of every process below ``root_pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        pid = int(text.split(" ", 1)[0])
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    frontier = [root_pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def wait_until(
    check: Any, timeout_s: float, what: str, interval_s: float = 1.0, on_timeout: Any = None
) -> Any:
    """Call ``check()`` until it returns something truthy; return that, or fail after
    ``timeout_s`` with ``what`` and ``on_timeout()`` (e.g. a log tail) in the message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{extra}")
        time.sleep(interval_s)


class PrefectApi:
    """The few REST calls the test reads the server with (plain httpx, no Prefect settings)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/", timeout=30.0)

    def healthy(self) -> bool:
        try:
            return self.http.get("health").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        answer = self.http.get(path)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        answer = self.http.post(path, json=dict(body))
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def patch(self, path: str, body: Mapping[str, Any]) -> None:
        self.http.patch(path, json=dict(body)).raise_for_status()

    def deployment(self, flow_name: str, deployment_name: str) -> dict[str, Any]:
        return dict(self.get(f"deployments/name/{flow_name}/{deployment_name}"))

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return dict(self.get(f"flow_runs/{flow_run_id}"))

    def flow_runs(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self.post("flow_runs/filter", {"flow_runs": filters, "limit": 200}))

    def descendants(self, flow_run_id: str) -> list[dict[str, Any]]:
        """Every subflow run below ``flow_run_id`` (any depth)."""
        found: list[dict[str, Any]] = []
        frontier = [flow_run_id]
        while frontier:
            children = self.flow_runs(parent_flow_run_id={"any_": frontier})
            found += children
            frontier = [child["id"] for child in children]
        return found

    def artifacts(self, flow_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        return list(
            self.post(
                "artifacts/filter",
                {"artifacts": {"flow_run_id": {"any_": list(flow_run_ids)}}, "limit": 200},
            )
        )

    def final_state(self, flow_run_id: str, timeout_s: float, logs: Any = None) -> dict[str, Any]:
        """Wait until the flow run is over; return its state."""

        def over() -> dict[str, Any] | None:
            state = self.flow_run(flow_run_id).get("state") or {}
            return state if state.get("type") in FINAL_STATES else None

        return dict(wait_until(over, timeout_s, f"flow run {flow_run_id} to end", 2.0, logs))

    def run_logs(self, flow_run_id: str, limit: int = 60) -> str:
        rows = self.post(
            "logs/filter",
            {
                "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                "sort": "TIMESTAMP_DESC",
                "limit": limit,
            },
        )
        return "\n".join(f"{row['level']:>3} {row['message']}" for row in reversed(rows))


class WebhookReceiver:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.raw.append(body)
                try:
                    receiver.bodies.append(json.loads(body))
                except ValueError:
                    receiver.bodies.append({"unparsed": body.decode(errors="replace")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/braincls-failures"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
