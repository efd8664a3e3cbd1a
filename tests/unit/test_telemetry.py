"""Telemetry: the metrics a rollout and a rollback leave behind, /metrics over HTTP, JSON logs.

Plans come from the real, pure planner, driven the way ``RolloutService`` drives it (questions
answered, alias writes applied or dropped), and reach ``Telemetry`` as the service reports them.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import prometheus_client
import pytest

from lambda_rollouts import __version__, planner
from lambda_rollouts.analysis import Readings
from lambda_rollouts.model import Phase, RolloutSpec, RolloutStatus
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import Answers, RouteTraffic
from lambda_rollouts.reconcile import ReconcileObserver, RolloutRef
from lambda_rollouts.telemetry import JsonLogFormatter, Telemetry, configure_logging

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PASS_SECONDS = 0.002
ERROR_RATE = {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 50}
CHECKOUT = RolloutRef("team-a", "checkout")
PAYMENTS = RolloutRef("team-a", "payments")

Reader = Callable[[planner.Measure], Readings]


def traffic(error_percent: float) -> Reader:
    """CloudWatch's answer: 100 invocations a minute, ``error_percent`` of them failing on the canary."""

    def read(measure: planner.Measure) -> Readings:
        values: dict[str, tuple[float, ...]] = {}
        for query in measure.request.queries:
            if query.id.endswith("_invocations"):
                values[query.id] = (100.0,)
            elif query.id.endswith("_errors"):
                values[query.id] = (error_percent,) if query.id.startswith("canary") else (0.0,)
            else:
                values[query.id] = ()
        return Readings(values=values)

    return read


def make_spec(function_name: str, steps: list[dict[str, object]]) -> RolloutSpec:
    return RolloutSpec.parse(
        {
            "functionName": function_name,
            "alias": "live",
            "version": "2",
            "analysis": ERROR_RATE,
            "strategy": {"canary": {"steps": steps}},
        }
    )


@dataclass
class Rollout:
    """One rollout, reconciled pass by pass and reported to a ``Telemetry``."""

    ref: RolloutRef
    spec: RolloutSpec
    observer: ReconcileObserver
    status: RolloutStatus = field(default_factory=RolloutStatus)
    alias: AliasState = field(default_factory=lambda: AliasState("1", {}, "rev-0"))
    passes: int = 0
    events: list[str] = field(default_factory=list)

    def reconcile(
        self, at: float, read: Reader, *, write_lands: Callable[[planner.Plan], bool] = lambda _: True
    ) -> planner.Plan:
        answers = Answers()
        for _ in range(6):
            plan = planner.plan(
                self.spec,
                self.status,
                self.alias,
                generation=1,
                now=T0 + timedelta(seconds=at),
                answers=answers,
            )
            if plan.verify is not None:
                answers = Answers(plan.verify.pair, answers.readings, answers.hook)
            elif plan.measure is not None:
                answers = Answers(answers.verified, read(plan.measure), answers.hook)
            else:
                break
        action = plan.action
        if isinstance(action, RouteTraffic) and write_lands(plan):
            routing = {action.canary: action.canary_percent} if action.canary else {}
            self.alias = AliasState(action.primary, routing, f"rev-{self.passes + 1}")
            canary = plan.status.canary_version
            weight = self.alias.percent_on(canary) if canary else None
            plan = planner.Plan(
                plan.status.model_copy(update={"canary_weight": weight}),
                action=action,
                requeue_after=plan.requeue_after,
                events=plan.events,
            )
        self.status = plan.status
        self.passes += 1
        self.events += [event.reason.value for event in plan.events]
        self.observer.reconciled(self.ref, plan, PASS_SECONDS)
        return plan

    def drive(self, *, start: float, until: float, read: Reader, rollback_lands: bool = True) -> None:
        """Reconcile at every requeue time from ``start`` until ``until`` or until nothing is due.

        With ``rollback_lands`` False, the write of a rollback is lost and driving stops there.
        """
        at = start
        while at <= until:
            plan = self.reconcile(
                at, read, write_lands=lambda plan: rollback_lands or not plan.status.aborted_at
            )
            if plan.requeue_after is None or (self.status.aborted_at and not rollback_lands):
                return
            at += plan.requeue_after


def sample(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value("lambda_rollouts_" + name, labels)


def measurements_in(status: RolloutStatus) -> int:
    runs = (status.analysis, status.step_analysis)
    return sum(run.measurements for run in runs if run is not None)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.close()


def test_telemetry_is_a_reconcile_observer(telemetry: Telemetry) -> None:
    observer: ReconcileObserver = telemetry
    assert observer is telemetry


def test_a_rollout_and_a_rollback_as_the_metrics_count_them(telemetry: Telemetry) -> None:
    checkout = Rollout(
        CHECKOUT,
        make_spec(
            "checkout-api",
            [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "2m"}}],
        ),
        telemetry,
    )
    checkout.drive(start=0, until=3600, read=traffic(error_percent=0))
    assert checkout.status.phase == Phase.HEALTHY
    assert checkout.events == [
        "Progressing",
        "WeightSet",
        "Progressing",  # the analysis step starts
        "AnalysisPassed",
        "WeightSet",
        "StepCompleted",  # the pause
        "Succeeded",
    ]
    # The failing release: its first measurement fails; the rollback write does not land at once.
    payments = Rollout(
        PAYMENTS, make_spec("payments", [{"setWeight": 10}, {"pause": {"duration": "5m"}}]), telemetry
    )
    payments.drive(start=0, until=3600, read=traffic(error_percent=50), rollback_lands=False)
    assert payments.status.phase == Phase.DEGRADED
    assert payments.events == ["Progressing", "WeightSet", "AnalysisFailed"]
    assert payments.alias.routing == {"2": 10.0}, "the rollback write was lost"
    # The next pass sends the rollback write again, with its Warning Event again: still one rollback.
    payments.reconcile(700, traffic(error_percent=50))
    assert payments.events[-1] == "AnalysisFailed"
    assert payments.alias == AliasState("1", {}, f"rev-{payments.passes}")

    assert sample(telemetry, "rollouts", phase="Healthy") == 1
    assert sample(telemetry, "rollouts", phase="Degraded") == 1
    assert sample(telemetry, "rollouts", phase="Progressing") == 0
    assert sample(telemetry, "rollouts", phase="Paused") == 0
    assert sample(telemetry, "canary_weight_percent", namespace="team-a", rollout="checkout") == 100
    assert sample(telemetry, "canary_weight_percent", namespace="team-a", rollout="payments") == 0

    assert sample(telemetry, "events_total", reason="Progressing", type="Normal") == 3
    assert sample(telemetry, "events_total", reason="WeightSet", type="Normal") == 3
    assert sample(telemetry, "events_total", reason="AnalysisPassed", type="Normal") == 1
    assert sample(telemetry, "events_total", reason="StepCompleted", type="Normal") == 1
    assert sample(telemetry, "events_total", reason="Succeeded", type="Normal") == 1
    assert sample(telemetry, "events_total", reason="AnalysisFailed", type="Warning") == 2
    # WeightSet x3, AnalysisPassed, StepCompleted.
    assert sample(telemetry, "step_transitions_total") == 5

    assert measurements_in(checkout.status) == 3
    assert sample(telemetry, "analysis_verdicts_total", verdict="Successful") == 3
    assert measurements_in(payments.status) == 1
    assert sample(telemetry, "analysis_verdicts_total", verdict="Failed") == 1
    assert sample(telemetry, "analysis_verdicts_total", verdict="Inconclusive") is None

    assert sample(telemetry, "rollbacks_total", reason="AnalysisFailed") == 1

    passes = checkout.passes + payments.passes
    assert sample(telemetry, "reconcile_duration_seconds_count") == passes
    assert sample(telemetry, "reconcile_duration_seconds_sum") == pytest.approx(passes * PASS_SECONDS)
    assert sample(telemetry, "reconcile_duration_seconds_bucket", le="0.001") == 0
    assert sample(telemetry, "reconcile_duration_seconds_bucket", le="0.0025") == passes
    assert sample(telemetry, "build_info", version=__version__) == 1


def test_a_second_rollback_of_the_same_rollout_counts_again(telemetry: Telemetry) -> None:
    spec = make_spec("payments", [{"setWeight": 10}, {"pause": {"duration": "5m"}}])
    payments = Rollout(PAYMENTS, spec, telemetry)
    payments.drive(start=0, until=3600, read=traffic(error_percent=50))
    # Version 3 is tried and fails the same way.
    payments.spec = spec.model_copy(update={"version": "3"})
    payments.drive(start=4000, until=7200, read=traffic(error_percent=50))

    assert payments.events.count("AnalysisFailed") == 2
    assert sample(telemetry, "rollbacks_total", reason="AnalysisFailed") == 2
    assert sample(telemetry, "analysis_verdicts_total", verdict="Failed") == 2


def test_forgotten_drops_the_rollout_from_every_per_rollout_series(telemetry: Telemetry) -> None:
    checkout = Rollout(CHECKOUT, make_spec("checkout-api", [{"setWeight": 10}, {"pause": {}}]), telemetry)
    checkout.drive(start=0, until=60, read=traffic(error_percent=0))
    other = Rollout(PAYMENTS, make_spec("payments", [{"setWeight": 20}, {"pause": {}}]), telemetry)
    other.drive(start=0, until=60, read=traffic(error_percent=0))
    assert sample(telemetry, "rollouts", phase="Paused") == 2
    assert sample(telemetry, "canary_weight_percent", namespace="team-a", rollout="checkout") == 10

    telemetry.forgotten(CHECKOUT)
    telemetry.forgotten(RolloutRef("team-a", "never-seen"))

    assert sample(telemetry, "rollouts", phase="Paused") == 1
    assert sample(telemetry, "canary_weight_percent", namespace="team-a", rollout="checkout") is None
    assert sample(telemetry, "canary_weight_percent", namespace="team-a", rollout="payments") == 20
    assert 'rollout="checkout"' not in telemetry.exposition()


def test_measurements_made_before_this_process_are_not_counted_again() -> None:
    """A restarted operator sees runs that already measured; only its own measurements count."""
    spec = make_spec("checkout-api", [{"setWeight": 10}, {"pause": {"duration": "10m"}}])
    earlier = Rollout(CHECKOUT, spec, Telemetry())
    earlier.drive(start=0, until=180, read=traffic(error_percent=0))
    assert earlier.status.analysis is not None
    assert earlier.status.analysis.measurements == 3

    restarted = Telemetry()
    later = Rollout(CHECKOUT, spec, restarted, status=earlier.status, alias=earlier.alias)
    later.reconcile(185, traffic(error_percent=0))
    assert sample(restarted, "analysis_verdicts_total", verdict="Successful") is None
    later.drive(start=240, until=240, read=traffic(error_percent=0))
    assert later.status.analysis is not None
    assert later.status.analysis.measurements == 4
    assert sample(restarted, "analysis_verdicts_total", verdict="Successful") == 1


def test_aws_calls_are_counted_by_service_operation_and_error_code(telemetry: Telemetry) -> None:
    telemetry.aws_call("lambda", "GetAlias", None)
    telemetry.aws_call("lambda", "GetAlias", None)
    telemetry.aws_call("lambda", "UpdateAlias", "PreconditionFailedException")
    telemetry.aws_call("cloudwatch", "GetMetricData", "EndpointConnectionError")

    assert sample(telemetry, "aws_calls_total", service="lambda", operation="GetAlias") == 2
    assert sample(telemetry, "aws_calls_total", service="lambda", operation="UpdateAlias") == 1
    assert sample(telemetry, "aws_calls_total", service="cloudwatch", operation="GetMetricData") == 1
    assert (
        sample(
            telemetry,
            "aws_call_errors_total",
            service="lambda",
            operation="UpdateAlias",
            error_code="PreconditionFailedException",
        )
        == 1
    )
    assert (
        sample(
            telemetry,
            "aws_call_errors_total",
            service="cloudwatch",
            operation="GetMetricData",
            error_code="EndpointConnectionError",
        )
        == 1
    )
    assert 'operation="GetAlias",service="lambda",error_code' not in telemetry.exposition()


def test_each_telemetry_has_a_registry_of_its_own() -> None:
    first, second = Telemetry(), Telemetry(version="9.9.9")
    first.aws_call("lambda", "GetAlias", None)

    assert sample(first, "aws_calls_total", service="lambda", operation="GetAlias") == 1
    assert sample(second, "aws_calls_total", service="lambda", operation="GetAlias") is None
    assert sample(second, "build_info", version="9.9.9") == 1
    assert (
        prometheus_client.REGISTRY.get_sample_value("lambda_rollouts_build_info", {"version": __version__})
        is None
    )


def test_a_failure_inside_the_observer_is_logged_not_raised(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(seconds: float) -> None:
        raise RuntimeError("broken histogram")

    monkeypatch.setattr(telemetry._duration, "observe", broken)
    checkout = Rollout(CHECKOUT, make_spec("checkout-api", [{"setWeight": 10}]), telemetry)
    with caplog.at_level(logging.ERROR, logger="lambda_rollouts.telemetry"):
        checkout.reconcile(0, traffic(error_percent=0))

    assert "metrics: cannot record the reconcile of team-a/checkout" in caplog.text


def test_metrics_are_served_over_http_on_the_port_asked_for(telemetry: Telemetry) -> None:
    checkout = Rollout(CHECKOUT, make_spec("checkout-api", [{"setWeight": 10}, {"pause": {}}]), telemetry)
    checkout.drive(start=0, until=60, read=traffic(error_percent=0))
    telemetry.aws_call("lambda", "GetAlias", None)

    port = telemetry.start_http_server("127.0.0.1", 0)
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        lines = response.read().decode().splitlines()

    assert f'lambda_rollouts_build_info{{version="{__version__}"}} 1.0' in lines
    assert 'lambda_rollouts_rollouts{phase="Paused"} 1.0' in lines
    assert 'lambda_rollouts_canary_weight_percent{namespace="team-a",rollout="checkout"} 10.0' in lines
    assert 'lambda_rollouts_aws_calls_total{operation="GetAlias",service="lambda"} 1.0' in lines
    assert f"lambda_rollouts_reconcile_duration_seconds_count {float(checkout.passes)}" in lines
    assert "# TYPE lambda_rollouts_rollbacks_total counter" in lines
    telemetry.close()
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


# -- logs --------------------------------------------------------------------------------------


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_logs_are_one_object_per_line_with_kopfs_object_reference() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    log = logging.getLogger("lambda_rollouts.test_telemetry.json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        log.info("rollout %s: weight set", "team-a/checkout")
        # As Kopf's per-object logger sends them: a reference to the object, plus its own extras.
        ref = {
            "apiVersion": "lambda.rollouts.dev/v1alpha1",
            "kind": "LambdaRollout",
            "name": "checkout",
            "uid": "u-1",
            "namespace": "team-a",
        }
        log.warning(
            "Handler 'drive_rollout' failed", extra={"k8s_ref": ref, "k8s_skip": False, "settings": object()}
        )
        try:
            raise ValueError("multi\nline")
        except ValueError:
            log.exception("it broke", extra={"attempt": 2})
    finally:
        log.removeHandler(handler)

    first, second, third = _json_lines(stream.getvalue())
    assert list(first) == ["time", "level", "logger", "message"]
    assert first["level"] == "INFO"
    assert first["logger"] == "lambda_rollouts.test_telemetry.json"
    assert first["message"] == "rollout team-a/checkout: weight set"
    assert datetime.fromisoformat(str(first["time"])).tzinfo is not None
    assert list(second) == ["time", "level", "logger", "message", "namespace", "name"]
    assert (second["level"], second["namespace"], second["name"]) == ("WARNING", "team-a", "checkout")
    assert third["level"] == "ERROR"
    assert third["attempt"] == 2
    assert "ValueError: multi\nline" in str(third["exc_info"])


def test_configure_logging_replaces_its_own_handler_and_leaves_others_alone() -> None:
    root = logging.getLogger()
    level = root.level
    others = list(root.handlers)
    text, structured = io.StringIO(), io.StringIO()
    try:
        configure_logging("text", "INFO", stream=text)
        handler = configure_logging("json", "INFO", stream=structured)
        logging.getLogger("lambda_rollouts.test_telemetry").info("hello")
        logging.getLogger("lambda_rollouts.test_telemetry").debug("not at INFO")
        assert [h for h in root.handlers if h not in others] == [handler]
    finally:
        for added in [h for h in root.handlers if h not in others]:
            root.removeHandler(added)
        root.setLevel(level)

    assert text.getvalue() == ""
    [line] = _json_lines(structured.getvalue())
    assert (line["level"], line["message"]) == ("INFO", "hello")


def test_run_with_json_logs_writes_only_json_lines(tmp_path: pathlib.Path) -> None:
    """The real command: the operator starts, fails to log in to Kubernetes, and says so in JSON."""
    missing = tmp_path / "no-such-kubeconfig"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lambda_rollouts.cli import main; main()",
            "run",
            "--log-format",
            "json",
            "--metrics-port",
            "0",
        ],
        env={"KUBECONFIG": str(missing), "HOME": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    *logged, last = result.stderr.splitlines()
    assert last.startswith("Error: cannot read the Kubernetes credentials")
    records = _json_lines("\n".join(logged))
    assert records, "the operator logged its start and its failure"
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(
        record["level"] == "ERROR" and "cannot read the Kubernetes credentials" in str(record["message"])
        for record in records
    )
