"""`braincls setup` against a Prefect API: what it creates, and what it prints."""

from __future__ import annotations

import pytest

SECRET_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/s3cretT0kenXXXXXXXXXXXX"


def test_setup_never_prints_the_webhook_url() -> None:
    # Chat services put the credential in the URL's path: whoever reads setup's output (a CI
    # log, a terminal recording) could post to the channel.
    from prefect.client.orchestration import get_client

    from flows.ops import FAILURE_AUTOMATION_NAME, setup_operations

    url = "http://127.0.0.1:9/services/T0AAAAAAA/B0BBBBBBB/s3cretT0kenXXXXXXXXXXXX"
    try:
        report = setup_operations(tcia_limit=2, webhook_url=url)
    finally:
        with get_client(sync_client=True) as client:  # no calls to it from other tests' runs
            for automation in client.read_automations_by_name(FAILURE_AUTOMATION_NAME):
                client.delete_automation(automation.id)
    assert "failure webhook: POST http://127.0.0.1:9/… (block braincls-failure-webhook)" in (
        report.lines
    )
    text = "\n".join(report.lines)
    for secret in ("s3cretT0ken", "T0AAAAAAA", "/services/"):
        assert secret not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URL, "https://hooks.slack.com/…"),
        (
            "https://user:pw@chat.example.org:8443/hooks/abc?token=x",
            "https://chat.example.org:8443/…",
        ),
        ("http://127.0.0.1:9999/", "http://127.0.0.1:9999/…"),
        ("not a url", "…"),
    ],
)
def test_webhook_urls_are_masked_to_their_host(url: str, shown: str) -> None:
    from flows.ops import masked_url

    assert masked_url(url) == shown
