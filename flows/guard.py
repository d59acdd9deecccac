"""What a worker refuses to do for a deployment run: write outside its data roots, or talk to
an API it does not know.

A deployment run's parameters come from whoever can reach the Prefect server: the run form, the
REST API, or an event whose payload a trigger copies into the parameters (``retrain-on-ingest``
takes ``data_root`` and ``base_url`` from it). The open-source server has no authentication of
its own, so the worker checks them against its own settings
(:func:`braincls.config.check_run_location`). Runs started in a shell (the CLI, a notebook) are
the user's own and are not checked.
"""

from __future__ import annotations

from pathlib import Path

from braincls.config import Settings, check_run_location


def check_deployment_run(data_root: str | Path, base_url: str | None = None) -> None:
    """In a deployment run, raise :class:`~braincls.config.UntrustedLocation` unless
    ``data_root`` and ``base_url`` are allowed by this worker's ``BRAINCLS_*`` settings."""
    from prefect.runtime import deployment

    if deployment.id:
        check_run_location(Settings(), data_root, base_url)
