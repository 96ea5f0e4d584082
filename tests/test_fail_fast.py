"""The fail-fast rule (engine.fail_fast), on trial outcomes made here; the
tune test of a misnamed objective checks it on a real tune."""

from __future__ import annotations

from gpkg_ray.engine.fail_fast import FailFast, failure_key, systematic_failure
from gpkg_ray.engine.interrupts import StopRequest
from gpkg_ray.errors import LOST_WORKER
from gpkg_ray.trial.outcome import TrialOutcome


def _missing(number: int, run_id: str) -> TrialOutcome:
    """A trial failed as one whose objective names a scalar no step logs."""
    return _ended(
        number,
        "failed",
        f"step evaluate (run {run_id}) did not record scalar 'acc_vall' "
        "(scalars found: acc_val)",
    )


def _ended(number: int, status: str, error: str | None = None, **fields):
    outcome = TrialOutcome(number, {"lr": 0.01 * number}, status=status, error=error)
    for name, value in fields.items():
        setattr(outcome, name, value)
    return outcome


def _watch(trials: int, outcomes: list[TrialOutcome]) -> FailFast:
    fail_fast = FailFast(trials)
    for outcome in outcomes:
        fail_fast.trial_ended(outcome)
    return fail_fast


def test_failure_key_takes_run_ids_out():
    assert failure_key("step train (run 1a2b3c4d) failed") == (
        "step train (run <run>) failed"
    )
    assert failure_key(f"File /home/runs/{'ab12' * 8}/train.py") == (
        "File /home/runs/<run>/train.py"
    )
    assert failure_key("exit status 1: lr too big") == "exit status 1: lr too big"


def test_the_first_trials_failing_the_same_way_stop_the_search():
    fail_fast = _watch(3, [_missing(1, "1a2b3c4d"), _missing(2, "99990000")])
    assert fail_fast.failure is None  # two of three

    fail_fast.trial_ended(_missing(3, "deadbeef"))

    assert str(fail_fast.failure) == (
        "tune stopped: the first 3 trials failed the same way: step evaluate "
        "(run 1a2b3c4d) did not record scalar 'acc_vall' (scalars found: acc_val)"
    )
    assert fail_fast.failure.summary == "the first 3 trials failed the same way"


def test_a_trial_that_completes_among_the_first_turns_the_rule_off():
    fail_fast = _watch(
        3, [_missing(1, "1a2b3c4d"), _ended(2, "completed"), _missing(3, "deadbeef")]
    )
    assert fail_fast.failure is None
    assert fail_fast.decided
    # Later failures, however many, do not count: the objective works.
    for number in range(4, 10):
        fail_fast.trial_ended(_missing(number, "00000000"))
    assert fail_fast.failure is None


def test_different_errors_or_a_trial_stopped_early_do_not_stop_the_search():
    crash = _ended(3, "failed", "step train (run 00000000) failed: train crashed")
    assert (
        _watch(3, [_missing(1, "1a2b3c4d"), _missing(2, "aaaa0000"), crash]).failure
        is None
    )
    by_scheduler = _ended(3, "stopped", stop_reason="stopped early by asha")
    assert (
        _watch(
            3, [_missing(1, "1a2b3c4d"), _missing(2, "aaaa0000"), by_scheduler]
        ).failure
        is None
    )


def test_interrupted_trials_do_not_count_and_zero_turns_the_rule_off():
    interrupted = _ended(2, "stopped", stop_reason="SIGINT", interrupted=True)
    fail_fast = _watch(2, [_missing(1, "1a2b3c4d"), interrupted])
    assert not fail_fast.decided and fail_fast.failure is None
    fail_fast.trial_ended(_missing(3, "aaaa0000"))
    assert fail_fast.failure is not None

    off = _watch(0, [_missing(n, f"{n:08d}") for n in range(1, 6)])
    assert off.decided and off.failure is None


def test_trials_whose_worker_was_lost_do_not_count():
    """A node that died fails its trials alike: no fault of theirs."""
    lost = [
        _ended(n, "failed", f"{LOST_WORKER} (RayActorError): the node died")
        for n in range(1, 4)
    ]
    fail_fast = _watch(3, lost)
    assert not fail_fast.decided and fail_fast.failure is None


def test_systematic_failure_needs_every_trial_failed_with_an_error():
    assert systematic_failure([]) is None
    assert systematic_failure([_ended(1, "failed", None)]) is None
    one = systematic_failure([_missing(1, "1a2b3c4d")])
    assert one is not None and one.trials == 1


def test_a_stop_request_names_a_systematic_failure_for_the_trials_it_stops():
    stop = StopRequest()
    assert stop.reason is None
    stop.failure = _watch(2, [_missing(1, "1a2b3c4d"), _missing(2, "aaaa0000")]).failure
    assert stop.reason == "the first 2 trials failed the same way"
