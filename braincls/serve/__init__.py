"""The prediction service (``braincls serve``): a FastAPI application with one upload page,
scoring through :mod:`braincls.predict`. See :mod:`braincls.serve.app`."""
