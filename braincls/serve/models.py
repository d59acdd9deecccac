"""The model the service answers with: loaded once, and replaced without a restart when the
registry's champion changes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from braincls.common.layout import DataLayout
from braincls.predict.model import PredictError, ScoringModel, open_model, resolve_model_dir

logger = logging.getLogger(__name__)


class ModelHolder:
    """The current model of a service.

    Pinned to a folder or a registry version, it never changes. Following the champion (the
    default), every :meth:`current` call compares the registry state file's modification time
    and size with those last seen (one ``stat``); when they changed it reads the champion and,
    if that is another version, loads it under a lock and swaps it in. Requests already
    running finish with the model they started with. A champion that cannot be loaded (no
    threshold, a damaged file) leaves the previous model serving, and says so in the log.
    """

    def __init__(
        self, data_root: Path, model_dir: Path | None = None, version: str | None = None
    ) -> None:
        self.data_root = Path(data_root)
        self.pinned = model_dir is not None or version is not None
        self._lock = threading.Lock()
        self._state_path = DataLayout(self.data_root).models / "registry.json"
        self._seen = self._stamp()
        folder = resolve_model_dir(self.data_root, model_dir, version)
        self._model = open_model(folder, self.data_root)
        self._folder = folder.resolve()
        self._explainers: dict[str, Any] = {}
        #: Held around every model call: TensorFlow already uses every core for one call.
        self.inference_lock = threading.Lock()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self._state_path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def current(self) -> ScoringModel:
        """The model to answer with now (the champion's, if it changed since the last call)."""
        if self.pinned or self._stamp() == self._seen:
            return self._model
        with self._lock:
            stamp = self._stamp()
            if stamp == self._seen:
                return self._model
            self._seen = stamp
            try:
                folder = resolve_model_dir(self.data_root).resolve()
                if folder != self._folder:
                    model = open_model(folder, self.data_root)
                    logger.info(
                        "champion changed: now serving %s (was %s)",
                        model.version,
                        self._model.version,
                    )
                    self._model, self._folder = model, folder
            except PredictError as error:
                logger.warning(
                    "still serving %s: the new champion cannot be loaded: %s",
                    self._model.version,
                    error,
                )
        return self._model

    def explainer(self, model: ScoringModel) -> Any:
        """The Grad-CAM explainer of ``model`` (traced once per model)."""
        from braincls.model.gradcam import GradcamExplainer

        with self._lock:
            found = self._explainers.get(model.model_sha256)
            if found is None:
                found = GradcamExplainer(model.keras_model)
                self._explainers = {model.model_sha256: found}
            return found
