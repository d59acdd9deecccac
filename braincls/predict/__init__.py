"""Prediction: score new images, DICOM and NIfTI volumes with a trained model, prepared exactly
as its training data was and called at the threshold fixed at evaluation.

- :func:`~braincls.predict.model.resolve_model_dir` and :func:`~braincls.predict.model.open_model`:
  which model (the champion by default), loaded once with its threshold and preparation.
- :func:`~braincls.predict.score.predict_paths`: files or folders in, the predictions table and
  its per-series / per-volume / per-patient summary out.
- :func:`~braincls.predict.stage.run_score`: the same under a data root (the score flow).
"""
