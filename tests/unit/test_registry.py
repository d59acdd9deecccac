"""Model registry: versions, champion and challenger, floors, rollback, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from braincls.common.hashing import sha256_file
from braincls.common.notices import INTENDED_USE
from braincls.config import RegistryConfig
from braincls.registry.card import VERSION_PLACEHOLDER, model_card_markdown
from braincls.registry.promotion import Comparison, decide_promotion
from braincls.registry.store import ModelRegistry, RegistryError, UnknownVersionError

CONFIG = RegistryConfig(
    min_sensitivity=0.8, min_roc_auc=0.85, non_inferiority_margin=0.01, decision_metric="roc_auc"
)


def _model_file(folder: Path, content: bytes = b"keras-zip-bytes") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.keras"
    path.write_bytes(content)
    return path


def _register(
    registry: ModelRegistry, tmp_path: Path, roc_auc: float, sensitivity: float = 0.9
) -> str:
    folder = tmp_path / f"train-{roc_auc}-{sensitivity}"
    model = _model_file(folder, str(folder).encode())  # distinct bytes: a distinct model
    metrics = {"roc_auc": roc_auc, "sensitivity": sensitivity, "specificity": 0.9}
    return registry.register(model, metrics, {"run_id": "r"}, "# card").version


def test_register_copies_files_and_allocates_increasing_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.list() == []
    assert registry.champion() is None
    source = _model_file(tmp_path / "run", b"model-one")
    card = f"# Model card: seed_cnn {VERSION_PLACEHOLDER}\n"
    first = registry.register(source, {"roc_auc": 0.9}, {"run_id": "run-1"}, card)
    other = _model_file(tmp_path / "run-2", b"model-two")
    second = registry.register(other, {"roc_auc": float("nan")}, {"run_id": "run-2"}, card)

    assert (first.version, second.version) == ("v0001", "v0002")
    assert first.status == "challenger"
    assert first.model_path.read_bytes() == b"model-one"
    assert first.model_sha256 == sha256_file(source)
    assert first.card_path.read_text() == "# Model card: seed_cnn v0001\n"
    metadata = first.metadata()
    assert metadata["run_id"] == "run-1"
    assert metadata["version"] == "v0001"
    assert metadata["model_sha256"] == first.model_sha256
    assert metadata["metrics"] == {"roc_auc": 0.9}
    assert second.metrics == {"roc_auc": None}  # NaN is stored as null, keeping JSON strict
    assert [v.version for v in registry.list()] == ["v0001", "v0002"]
    assert registry.get("v0002").metadata()["run_id"] == "run-2"
    # No staging folders are left behind.
    assert sorted(p.name for p in registry.root.iterdir() if p.is_dir()) == ["v0001", "v0002"]


def test_a_version_is_readable_by_the_umasks_users_and_flushed_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    previous = os.umask(0o002)
    try:
        registry = ModelRegistry(tmp_path / "models")
        version = registry.get(_register(registry, tmp_path, 0.9))
    finally:
        os.umask(previous)
    modes = {
        path.relative_to(registry.root).as_posix(): oct(stat.S_IMODE(path.stat().st_mode))
        for path in (version.path, version.model_path, version.metadata_path, registry.state_path)
    }
    assert modes == {
        "v0001": "0o775",
        "v0001/model.keras": "0o664",
        "v0001/metadata.json": "0o664",
        "registry.json": "0o664",
    }
    names = {Path(name).name for name in synced}
    assert {"model.keras", "models"} <= names
    for written in (".metadata.json.", ".registry.json."):  # before their renames
        assert any(name.startswith(written) for name in names), written


def test_a_model_already_registered_is_not_registered_again(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    source = _model_file(tmp_path / "run", b"model-one")
    first = registry.register(source, {"roc_auc": 0.9}, {"run_id": "run-1"}, "# card")
    again = registry.register(source, {"roc_auc": 0.9}, {"run_id": "run-1-rerun"}, "# card")
    assert again.version == first.version == "v0001"
    assert again.metadata()["run_id"] == "run-1"
    assert sorted(p.name for p in registry.root.iterdir() if p.is_dir()) == ["v0001"]


def test_simultaneous_registrations_of_one_model_give_one_version(tmp_path: Path) -> None:
    # The check sits inside the lock: two runs finishing with the same model at once (say a
    # retried registration) cannot both find it missing and register it twice.
    import threading

    registry = ModelRegistry(tmp_path / "models")
    source = _model_file(tmp_path / "run", b"model-one")
    start = threading.Barrier(4)
    versions: list[str] = []

    def register() -> None:
        start.wait(timeout=30)
        versions.append(registry.register(source, {}, {}, "# card").version)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert versions == ["v0001"] * 4
    assert [v.version for v in registry.list()] == ["v0001"]


def test_a_held_lock_times_out_with_a_message_naming_its_holder(tmp_path: Path) -> None:
    import fcntl
    import time

    from braincls.registry.store import RegistryLockTimeout

    registry = ModelRegistry(tmp_path / "models", lock_timeout_seconds=0.3)
    version = _register(registry, tmp_path, 0.9)
    with open(registry.root / ".lock", "a+b") as held:  # another holder (its own open file)
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(RegistryLockTimeout) as error:
            registry.promote(version)
        waited = time.monotonic() - started
    assert 0.3 <= waited < 5
    message = str(error.value)
    assert message.startswith(
        f"the model registry {registry.root}: {registry.root / '.lock'} is locked by process "
    )
    assert "was not released within 0.3 s" in message
    assert isinstance(error.value, RegistryError)  # the CLI prints it as one line
    assert registry.promote(version).promoted  # free again


def test_register_never_reuses_a_version_folder(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    (registry.root / "v0007").mkdir(parents=True)  # left by a crash before the state was saved
    assert _register(registry, tmp_path, 0.9) == "v0008"


def test_register_missing_model_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(RegistryError, match="no such model file"):
        registry.register(tmp_path / "absent.keras", {}, {}, "")


def test_get_unknown_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _register(registry, tmp_path, 0.9)
    with pytest.raises(UnknownVersionError) as error:
        registry.get("v0042")
    assert str(error.value) == (
        f"model version 'v0042' is not registered under {registry.root} (known: v0001)"
    )


def test_first_model_passing_floors_becomes_champion(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version = _register(registry, tmp_path, 0.90)
    decision = registry.promote_if_better(version, CONFIG)
    assert decision.promoted
    assert decision.champion_before is None
    assert decision.champion_after == "v0001"
    assert decision.reasons == [
        "v0001 passes the floors (Sensitivity (recall, TPR) 0.9000 >= 0.8000, ROC AUC 0.9000 "
        ">= 0.8500) and there is no champion yet: it becomes the first champion."
    ]
    champion = registry.champion()
    assert champion is not None and champion.version == "v0001" and champion.is_champion


def test_floors_are_enforced_even_without_a_champion(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    low_sensitivity = _register(registry, tmp_path, 0.95, sensitivity=0.6)
    decision = registry.promote_if_better(low_sensitivity, CONFIG)
    assert not decision.promoted
    assert decision.champion_after is None
    assert decision.reasons == [
        "Sensitivity (recall, TPR) 0.6000 is below the floor 0.8000; v0001 stays a challenger."
    ]
    assert [check.passed for check in decision.floors] == [False, True]

    undefined_auc = _register(registry, tmp_path, float("nan"))
    decision = registry.promote_if_better(undefined_auc, CONFIG)
    assert not decision.promoted
    assert decision.reasons == [
        "ROC AUC missing is below the floor 0.8500; v0002 stays a challenger."
    ]
    assert registry.champion() is None
    assert registry.get("v0002").status == "challenger"


def test_better_model_promoted_worse_kept_as_challenger(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)

    better = _register(registry, tmp_path, 0.93)
    decision = registry.promote_if_better(
        better, CONFIG, {"roc_auc": 0.905}, compared_champion="v0001"
    )
    assert decision.promoted
    assert decision.same_test_data is True
    assert (decision.candidate_value, decision.champion_value) == (0.93, 0.905)
    assert decision.reasons == [
        "ROC AUC 0.9300 vs champion v0001 0.9050 on the same test data: not worse by more than "
        "the margin 0.0100; v0002 becomes champion."
    ]
    assert registry.get("v0001").status == "retired"

    worse = _register(registry, tmp_path, 0.88)
    decision = registry.promote_if_better(worse, CONFIG, {"roc_auc": 0.93})
    assert not decision.promoted
    assert decision.champion_after == "v0002"
    assert decision.reasons == [
        "ROC AUC 0.8800 vs champion v0002 0.9300 on the same test data: worse by 0.0500, more "
        "than the margin 0.0100; v0003 stays a challenger."
    ]
    assert registry.get("v0003").status == "challenger"
    assert registry.champion().version == "v0002"  # type: ignore[union-attr]


def test_non_inferior_within_margin_is_promoted(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)
    slightly_worse = _register(registry, tmp_path, 0.895)
    assert registry.promote_if_better(slightly_worse, CONFIG, {"roc_auc": 0.90}).promoted


def test_champion_metrics_fall_back_to_registered_ones(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)
    candidate = _register(registry, tmp_path, 0.87)

    # Metrics of a champion that is no longer the champion are not used.
    decision = registry.promote_if_better(
        candidate, CONFIG, {"roc_auc": 0.5}, compared_champion="v0009"
    )
    assert not decision.promoted
    assert decision.same_test_data is False
    assert decision.champion_value == 0.90
    assert decision.reasons[0] == (
        "The supplied champion metrics belong to v0009, but the champion is now v0001; its "
        "registered metrics are used."
    )

    decision = registry.promote_if_better(candidate, CONFIG)
    assert decision.reasons[0].startswith(
        "The champion v0001 was not evaluated on v0002's test data"
    )
    assert decision.reasons[1].endswith(
        "on their own test data: worse by 0.0300, more than the margin 0.0100; "
        "v0002 stays a challenger."
    )


def test_decision_metric_is_configurable(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90, sensitivity=0.95), CONFIG)
    candidate = _register(registry, tmp_path, 0.99, sensitivity=0.85)
    by_sensitivity = CONFIG.model_copy(update={"decision_metric": "sensitivity"})
    decision = registry.promote_if_better(candidate, by_sensitivity, {"sensitivity": 0.95})
    assert not decision.promoted
    assert decision.decision_metric == "sensitivity"


def test_decisions_are_recorded(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)
    registry.promote_if_better(_register(registry, tmp_path, 0.70), CONFIG, {"roc_auc": 0.9})
    decisions = registry.decisions()
    assert [(d["version"], d["kind"], d["promoted"]) for d in decisions] == [
        ("v0001", "automatic", True),
        ("v0002", "automatic", False),
    ]
    assert decisions[1]["floors"][1] == {
        "metric": "roc_auc",
        "value": 0.7,
        "floor": 0.85,
        "passed": False,
    }
    lines = registry.decisions_path.read_text().splitlines()
    assert all(json.loads(line)["reasons"] for line in lines)


def test_manual_promotion_and_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = _register(registry, tmp_path, 0.90)
    second = _register(registry, tmp_path, 0.50)  # fails the floors
    registry.promote_if_better(first, CONFIG)

    manual = registry.promote(second, reason="approved by reviewer")
    assert manual.promoted and manual.kind == "manual"
    assert manual.reasons == ["approved by reviewer: v0002 replaces v0001."]
    assert registry.champion().version == "v0002"  # type: ignore[union-attr]
    assert not registry.promote(second).promoted  # already champion

    rollback = registry.rollback()
    assert rollback.kind == "rollback"
    assert (rollback.champion_before, rollback.champion_after) == ("v0002", "v0001")
    assert registry.champion().version == "v0001"  # type: ignore[union-attr]
    assert registry.get("v0002").status == "rolled_back"
    with pytest.raises(RegistryError) as error:
        registry.rollback()
    assert "no previous champion to roll back to" in str(error.value)
    assert [d["kind"] for d in registry.decisions()] == [
        "automatic",
        "manual",
        "manual",
        "rollback",
    ]


def test_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.root.mkdir()
    registry.state_path.write_text("{not json")
    with pytest.raises(RegistryError, match=r"registry\.json is not valid JSON"):
        registry.list()


def _process_context(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Child processes forked from a clean, single-threaded server that has imported this module.

    "spawn" would import pandas and braincls again in every child (seconds each on 2 cores);
    plain "fork" would copy whatever threads and locks earlier tests left in this process. The
    fork server (Python 3.11) ignores the parent's sys.path, so PYTHONPATH names this module's
    import root for its preload.
    """
    import_root = Path(__file__).resolve().parents[__name__.count(".")]
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(import_root), os.environ.get("PYTHONPATH")])),
    )
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _run_at_once(context: Any, target: Any, arguments: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per argument tuple, release them together, return what each put."""
    start = context.Event()
    results = context.Queue()
    workers = [context.Process(target=target, args=(*args, start, results)) for args in arguments]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
    # Each result is a few bytes, so joining before reading the queue cannot block a child.
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    return [results.get(timeout=10) for _ in workers]


def _register_and_promote(
    root: str, roc_auc: float, start: Any, results: Any
) -> None:  # runs in a child process
    registry = ModelRegistry(Path(root))
    source = _model_file(Path(root).parent / f"src-{roc_auc}", f"{roc_auc}".encode())
    start.wait(timeout=60)
    version = registry.register(
        source, {"roc_auc": roc_auc, "sensitivity": 0.9}, {}, "# card"
    ).version
    decision = registry.promote_if_better(version, CONFIG)
    results.put((version, roc_auc, decision.promoted))


def test_concurrent_registrations_and_promotions_are_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _process_context(monkeypatch)
    root = tmp_path / "models"
    scores = [0.86, 0.95, 0.88, 0.91, 0.87, 0.90]
    outcomes = _run_at_once(context, _register_and_promote, [(str(root), s) for s in scores])

    registry = ModelRegistry(root)
    versions = registry.list()
    assert sorted(v.version for v in versions) == [f"v{i:04d}" for i in range(1, 7)]
    assert len({outcome[0] for outcome in outcomes}) == 6
    champions = [v for v in versions if v.status == "champion"]
    assert len(champions) == 1
    # With margin 0.01 the champion's AUC never drops by more than 0.01 per promotion, and the
    # 0.95 model beats all others by more than the margin, so it ends as champion.
    assert champions[0].metrics["roc_auc"] == 0.95
    state = json.loads(registry.state_path.read_text())
    assert state["champion"] == champions[0].version
    assert state["champion_history"][-1] == champions[0].version
    assert len(registry.decisions()) == 6


def _promote_registered(root: str, version: str, start: Any, results: Any) -> None:
    registry = ModelRegistry(Path(root))
    start.wait(timeout=60)
    results.put((version, registry.promote_if_better(version, CONFIG).promoted))


def test_simultaneous_promotions_leave_one_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    # All equal: whichever goes first becomes champion; the others are non-inferior, so each
    # later one replaces it in turn. Any interleaving must still end with exactly one champion.
    versions = [_register(registry, tmp_path / str(i), 0.9) for i in range(6)]
    context = _process_context(monkeypatch)
    outcomes = _run_at_once(
        context, _promote_registered, [(str(registry.root), version) for version in versions]
    )
    assert sum(promoted for _, promoted in outcomes) == 6
    statuses = [v.status for v in registry.list()]
    assert statuses.count("champion") == 1
    assert statuses.count("retired") == 5
    decisions = registry.decisions()
    assert [d["champion_before"] for d in decisions][1:] == [
        d["champion_after"] for d in decisions
    ][:-1]


def test_model_card_states_use_data_config_code_metrics_and_limits() -> None:
    card = model_card_markdown(
        model_name="seed_cnn",
        training_data="Br35H (yes/, no/), 3000 images",
        data_hash="ab" * 32,
        split_strategy="grouped by near-duplicate group",
        config={"epochs": 10, "learning_rate": 0.001},
        code_version="0.1.0+g1234abc",
        metrics={"roc_auc": 0.912, "sensitivity": 0.9, "pr_auc": float("nan")},
        intervals={"roc_auc": (0.88, 0.94)},
        threshold=0.4321,
        threshold_rule="youden",
    )
    assert card.startswith(f"# Model card: seed_cnn {VERSION_PLACEHOLDER}\n")
    for heading in (
        "## Intended use",
        "## Training data",
        "## Configuration",
        "## Code version",
        "## Metrics",
        "## Limitations",
    ):
        assert heading in card
    assert INTENDED_USE in card
    assert f"`{'ab' * 32}`" in card
    assert '"learning_rate": 0.001' in card
    assert "`0.1.0+g1234abc`" in card
    assert "| ROC AUC | 0.912 | 0.880 to 0.940 |" in card
    assert "| Sensitivity (recall, TPR) | 0.900 | n/a |" in card
    assert "| PR AUC (average precision) | n/a | n/a |" in card
    assert "at threshold 0.4321 chosen by rule 'youden' on the validation split" in card


def test_the_margin_cannot_ratchet_the_metric_down_version_after_version(tmp_path: Path) -> None:
    # Each new model is within the margin of the champion before it, but together they lose
    # more than the margin: the candidate is held to the best champion on the same images.
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)
    second = _register(registry, tmp_path, 0.895)
    decision = registry.promote_if_better(
        second,
        CONFIG,
        comparison=Comparison(
            champion="v0001", same_test_data=True, candidate_value=0.895, champion_value=0.90
        ),
    )
    assert decision.promoted
    third = _register(registry, tmp_path, 0.886)
    comparison = Comparison(
        champion="v0002",
        same_test_data=True,
        candidate_value=0.886,
        champion_value=0.891,
        earlier_champions={"v0001": 0.90},
        test_images=169,
        excluded_images=3,
    )
    decision = registry.promote_if_better(third, CONFIG, comparison=comparison)
    assert not decision.promoted
    assert (decision.reference_version, decision.reference_value) == ("v0001", 0.90)
    assert decision.reasons == [
        "ROC AUC 0.8860 vs champion v0002 0.8910 and the best earlier champion v0001 0.9000 "
        "on the same 169 test images (3 left out: a compared model trained or validated on "
        "them): worse than v0001 by 0.0140, more than the margin 0.0100; v0003 stays a "
        "challenger."
    ]
    # The comparison is recorded with the decision (decisions.jsonl, the dashboard).
    recorded = registry.decisions()[-1]["comparison"]
    assert recorded == {
        "champion": "v0002",
        "same_test_data": True,
        "candidate_value": 0.886,
        "champion_value": 0.891,
        "earlier_champions": {"v0001": 0.90},
        "test_images": 169,
        "excluded_images": 3,
        "notes": [],
        "by_source": {},
        "reference_version": "v0001",
        "reference_value": 0.90,
    }
    within = _register(registry, tmp_path, 0.8925)
    decision = registry.promote_if_better(
        within, CONFIG, comparison=replace(comparison, candidate_value=0.8925)
    )
    assert decision.promoted
    assert decision.reasons[0].endswith(
        "not worse than the best (v0001) by more than the margin 0.0100; v0004 becomes champion."
    )


def test_a_comparison_with_a_replaced_champion_is_not_used(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.promote_if_better(_register(registry, tmp_path, 0.90), CONFIG)
    candidate = _register(registry, tmp_path, 0.95)
    stale = Comparison(
        champion="v0007", same_test_data=True, candidate_value=0.95, champion_value=0.5
    )
    decision = registry.promote_if_better(candidate, CONFIG, comparison=stale)
    assert decision.same_test_data is False
    assert decision.champion_value == 0.90
    assert decision.reasons[0] == (
        "The comparison was made against v0007, but the champion is now v0001; its "
        "registered metrics are used."
    )


def test_decide_promotion_needs_a_comparison_with_the_champion() -> None:
    with pytest.raises(ValueError, match="needs a comparison with that champion"):
        decide_promotion("v0002", {"roc_auc": 0.9, "sensitivity": 0.9}, "v0001", CONFIG)


def test_a_model_worse_on_one_source_is_refused_even_when_better_pooled() -> None:
    comparison = Comparison(
        champion="v0001",
        same_test_data=True,
        candidate_value=0.95,
        champion_value=0.93,
        test_images=300,
        by_source={
            "br35h": {"candidate": 0.99, "champion": 0.97, "images": 200},
            "brats-flair": {"candidate": 0.85, "champion": 0.90, "images": 100},
            "phantom": {"candidate": None, "champion": 0.8, "images": 12},  # one class: not judged
        },
    )
    metrics = {"roc_auc": 0.95, "sensitivity": 0.9}
    decision = decide_promotion("v0002", metrics, "v0001", CONFIG, comparison=comparison)
    assert not decision.promoted
    assert decision.champion_after == "v0001"
    assert decision.reasons == [
        "ROC AUC per source against the champion v0001: worse on 1 of 3 sources by more than "
        "the margin 0.0100 (brats-flair 0.8500 vs 0.9000); a model is promoted only if it "
        "holds up on every source, so v0002 stays a challenger.",
        "ROC AUC 0.9500 vs champion v0001 0.9300 on the same 300 test images: not worse by "
        "more than the margin 0.0100; v0002 becomes champion.",
    ]
    # Within the margin on every source: promoted.
    within = replace(
        comparison,
        by_source={
            "br35h": {"candidate": 0.99, "champion": 0.97, "images": 200},
            "brats-flair": {"candidate": 0.891, "champion": 0.90, "images": 100},
        },
    )
    assert decide_promotion("v0002", metrics, "v0001", CONFIG, comparison=within).promoted


def test_per_source_refusal_uses_registered_metrics_when_not_compared_on_shared_data(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")

    def register(pooled: float, per_source: dict[str, float]) -> str:
        folder = tmp_path / f"train-{pooled}-{len(per_source)}"
        metrics = {
            "roc_auc": pooled,
            "sensitivity": 0.9,
            "by_source": [
                {"source": source, "roc_auc": value, "n": 50}
                for source, value in per_source.items()
            ],
        }
        model = _model_file(folder, str(folder).encode())
        return registry.register(model, metrics, {"run_id": "r"}, "# card").version

    registry.promote_if_better(register(0.90, {"a": 0.95, "b": 0.85}), CONFIG)
    candidate = register(0.93, {"a": 0.99, "b": 0.80})
    decision = registry.promote_if_better(candidate, CONFIG)
    assert not decision.promoted
    assert decision.reasons[0].startswith(
        "ROC AUC per source against the champion v0001: worse on 1 of 2 sources by more "
        "than the margin 0.0100 (b 0.8000 vs 0.8500)"
    )
    assert registry.champion().version == "v0001"  # type: ignore[union-attr]
