"""The documented production job template (deploy/) is well-formed and asks for a GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes-gpu-job-template.json"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_every_placeholder_is_a_declared_variable() -> None:
    template = json.loads(TEMPLATE.read_text())
    used = {
        name
        for text in _strings(template["job_configuration"])
        for name in re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", text)
    }
    declared = set(template["variables"]["properties"])
    assert used - declared == set()
    assert {"image", "gpu_count", "data_volume_claim", "namespace"} <= used


def test_the_job_requests_one_nvidia_gpu_and_mounts_the_shared_data_root() -> None:
    template = json.loads(TEMPLATE.read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] == 1
    assert {"name": "braincls-data", "mountPath": "/opt/braincls/data"} in container["volumeMounts"]
    env = template["variables"]["properties"]["env"]["default"]
    assert env["BRAINCLS_DATA_ROOT"] == "/opt/braincls/data"


def test_no_scheduled_deployment_points_the_real_archive_at_the_demo_collection() -> None:
    # The scheduled runs ask the real TCIA (the default API); the demo phantom exists only
    # on the local stand-in. They default to what is already ingested under the data root.
    import yaml

    spec = yaml.safe_load((TEMPLATE.parents[1] / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        if deployment.get("schedules"):
            parameters = deployment.get("parameters", {})
            assert "collections" not in parameters, deployment["name"]
            assert "base_url" not in parameters, deployment["name"]
