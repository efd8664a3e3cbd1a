"""``kubectl lambdarollout dashboard`` against the sandbox, its page driven in headless Chromium.

The sandbox runs as a user runs it (``lambda-rollouts sandbox``, a process of its own), so that the
test's own code may block on the browser. The dashboard runs through kubectl as a plugin, with the
sandbox's kubeconfig. Set ``DASHBOARD_SCREENSHOT=docs/images/dashboard.png`` to keep the page's
picture mid-rollout for the README (every run keeps one in its temporary directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from selenium.webdriver.support.ui import WebDriverWait

from lambda_rollouts.dashboard.server import TOKEN_HEADER, Board, host_allowed, host_names, watch_objects
from lambda_rollouts.model import ACTION_ANNOTATION
from lambda_rollouts.plugin import Connection, DashboardSource, Kubectl, dashboard_view
from lambda_rollouts.sandbox.aws import sandbox_session

from ..dashboard_page import Dashboard, Page, chromium

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
NAME = "checkout-api"
# Held at 10% and again at 50% until promoted: every move of the rollout is the test's doing.
TWO_HOLDS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]


def rollout(steps: list[dict[str, Any]], namespace: str = "default") -> dict[str, Any]:
    """A rollout of version 2 of the function the sandbox seeds (alias live on version 1)."""
    return {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "functionName": NAME,
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": steps}},
        },
    }


@dataclass(frozen=True)
class Sandbox:
    kubeconfig: Path
    aws_endpoint: str
    workdir: Path

    def env(self) -> dict[str, str]:
        environment = dict(os.environ)
        # First on PATH, so that kubectl finds this checkout's plugin, not an installed one.
        environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
        environment["KUBECONFIG"] = str(self.kubeconfig)
        environment["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        return environment

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        ran = subprocess.run(
            [str(BIN / "kubectl"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
            check=False,
        )
        assert not check or ran.returncode == 0, ran.stderr
        return ran

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    def annotations(self, name: str = NAME, namespace: str = "default") -> dict[str, str]:
        body = json.loads(self.kubectl("get", "lro", name, "-n", namespace, "-o", "json").stdout)
        annotations: dict[str, str] = body["metadata"].get("annotations") or {}
        return annotations

    def alias(self) -> tuple[str, dict[str, float]]:
        client = sandbox_session("us-east-1", endpoint_url=self.aws_endpoint).client("lambda")
        served = client.get_alias(FunctionName=NAME, Name="live")
        return served["FunctionVersion"], dict(
            (served.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        )


def start_sandbox(workdir: Path, *args: str) -> Iterator[Sandbox]:
    log = workdir / "sandbox.log"
    environment = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BIN / "lambda-rollouts"), "sandbox", *args],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        text = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C to stop." not in text:
            assert process.poll() is None, f"the sandbox exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the sandbox did not start: {text}"
            time.sleep(0.2)  # polls the sandbox's output for its ready line
            text = log.read_text(errors="replace")
        kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", text, re.MULTILINE)
        endpoint = re.search(r"^export AWS_ENDPOINT_URL=(\S+)$", text, re.MULTILINE)
        assert kubeconfig is not None, text
        assert endpoint is not None, text
        yield Sandbox(Path(kubeconfig.group(1)), endpoint.group(1), workdir)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """The sandbox with its operator."""
    yield from start_sandbox(tmp_path)


@pytest.fixture
def without_operator(tmp_path: Path) -> Iterator[Sandbox]:
    """The sandbox, and no operator: a request stays on the rollout for the test to read."""
    yield from start_sandbox(tmp_path, "--no-operator")


@pytest.fixture
def dashboard(sandbox: Sandbox, tmp_path: Path) -> Iterator[Dashboard]:
    running = Dashboard(tmp_path, sandbox.env())
    yield running
    running.stop()


# -- the page, live ------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_the_page_follows_a_rollout_and_its_buttons_reach_the_operator(
    sandbox: Sandbox, dashboard: Dashboard, tmp_path: Path
) -> None:
    with chromium(tmp_path / "profile") as driver:
        page = Page(driver, dashboard.url)
        page.until(
            lambda: page.text("#empty") == "No LambdaRollouts in namespace default.", what="no rollouts"
        )
        assert page.text("#connection") == "live"
        assert driver.title == "LambdaRollouts: namespace default"

        sandbox.apply(rollout(TWO_HOLDS))
        at_10 = page.card_until("default", NAME, lambda card: card["weight"] == "10", what="weight 10")
        assert at_10["phase"] == "Paused"
        assert at_10["weightText"] == "10% on version 2"
        assert at_10["facts"] == "function checkout-api · alias live · stable 1 · canary 2 · step 2/4"
        assert at_10["steps"] == [
            ["done", "done1. setWeight 10"],
            ["->", "now2. pause until promoted"],
            ["", "3. setWeight 50"],
            ["", "4. pause until promoted"],
            ["", "5. promote: all traffic on version 2"],
        ]
        assert at_10["buttons"] == ["promote", "promote-full", "abort", "retry", "pause", "resume"]
        # The Events' history (0% when the rollout began, then 10%) and the weight seen here.
        at_10 = page.card_until("default", NAME, lambda card: "WeightSet" in card["events"], what="Events")
        assert at_10["chartLastWeight"] == "10"
        assert at_10["chartPoints"] >= 3, at_10
        assert "Reconciling   True     PausedByStep" in at_10["details"]

        page.press("default", NAME, "pause")
        paused = page.answer("default", NAME)
        assert paused["answerState"] == "applied", paused
        assert paused["answer"].startswith("Applied: pause: ")
        page.card_until("default", NAME, lambda card: card["held"] == "Held by a pause action", what="held")
        page.press("default", NAME, "resume")
        resumed = page.answer("default", NAME)
        assert resumed["answer"].startswith("Applied: resume: "), resumed
        page.card_until("default", NAME, lambda card: card["held"] == "", what="no longer held")
        assert resumed["lastAction"].startswith("Last action: resume (id dashboard-")

        page.press("default", NAME, "promote")
        assert page.answer("default", NAME)["answer"].startswith("Applied: promote: ")
        at_50 = page.card_until(
            "default",
            NAME,
            lambda card: card["weight"] == "50" and card["chartLastWeight"] == "50",
            what="weight 50",
        )
        assert at_50["current"] == ["now4. pause until promoted"]
        assert at_50["chartPath"] != at_10["chartPath"]
        assert at_50["chartPoints"] > at_10["chartPoints"]
        assert sandbox.alias() == ("1", {"2": 0.5})
        page.screenshot(tmp_path / "dashboard.png")
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            page.screenshot(ROOT / os.environ["DASHBOARD_SCREENSHOT"])

        # kubectl's watch ends (as when the API server closes it): the dashboard starts another.
        [(old_pid, _)] = [
            (pid, line) for pid, line in dashboard.watch_processes() if "lambdarollouts" in line
        ]
        os.kill(old_pid, signal.SIGTERM)
        page.until(
            lambda: any(
                "lambdarollouts" in line and pid != old_pid for pid, line in dashboard.watch_processes()
            ),
            what="a new watch of the rollouts",
        )
        page.press("default", NAME, "promote")
        assert page.answer("default", NAME)["answer"].startswith("Applied: promote: ")
        done = page.card_until("default", NAME, lambda card: card["phase"] == "Healthy", what="Healthy")
        assert done["weight"] == "100"
        assert [marker for marker, _ in done["steps"]] == ["done"] * 5
        assert sandbox.alias() == ("2", {})
        page.card_until(
            "default", NAME, lambda card: card["chartLastWeight"] == "100", what="the chart at 100%"
        )

    watches = [pid for pid, _ in dashboard.watch_processes()]
    assert len(watches) == 2
    assert dashboard.stop() == 0
    assert dashboard.out.splitlines()[-1] == "Stopped."
    # Its kubectl watches ended with it.
    assert not [pid for pid in watches if Path(f"/proc/{pid}").exists()]


# -- safety -----------------------------------------------------------------------------------------


class AnotherSite:
    """A web page of another origin that tries to drive the dashboard, as a malicious site would."""

    PAGE = """<!doctype html><html><body><iframe name="sink"></iframe>
<form id="form" method="POST" target="sink" enctype="text/plain" action="{action}">
<input name='{{"action":"abort","x":"' value='"}}'></form>
<script>
const results = {{}};
const action = "{action}";
const body = JSON.stringify({{action: "abort"}});
async function attempt(name, run) {{
  try {{ results[name] = await run(); }} catch (error) {{ results[name] = "blocked: " + error; }}
}}
(async () => {{
  await attempt("simple", async () => (await fetch(action, {{method: "POST", mode: "no-cors", body,
    headers: {{"Content-Type": "text/plain"}}}})).type);
  await attempt("with-token-header", async () => (await fetch(action, {{method: "POST", body,
    headers: {{"Content-Type": "application/json", "{header}": "guessed"}}}})).status);
  await attempt("read-page", async () => (await (await fetch("{dashboard}")).text()).length);
  // The form's answer lands in the frame: done once it has.
  document.querySelector("iframe").addEventListener("load", () => {{ document.title = "done"; }});
  document.getElementById("form").submit();
}})();
</script></body></html>"""

    def __init__(self, dashboard_url: str, action: str) -> None:
        page = self.PAGE.format(action=action, dashboard=dashboard_url, header=TOKEN_HEADER).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(180)
def test_only_the_page_itself_can_act_and_only_under_its_own_name(
    without_operator: Sandbox, tmp_path: Path
) -> None:
    sandbox = without_operator
    sandbox.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    sandbox.apply(rollout(TWO_HOLDS, namespace="team-a"))
    dashboard = Dashboard(tmp_path, sandbox.env(), "--all-namespaces")
    try:
        url, port = dashboard.url, dashboard.port
        assert url == f"http://127.0.0.1:{port}/"
        action = f"{url}api/rollouts/team-a/{NAME}/actions"
        session = requests.Session()
        session.trust_env = False  # the machine's proxy settings are not the code under test

        served = session.get(url, timeout=10)
        assert served.status_code == 200
        token = json.loads(
            re.search(r'<script type="application/json" id="config">(.*?)</script>', served.text).group(1)
        )["token"]
        assert len(token) >= 40
        # In the page only: not in the URL the user is given, nor anywhere in what was printed.
        assert token not in dashboard.out + dashboard.err
        assert "frame-ancestors 'none'" in served.headers["Content-Security-Policy"]
        assert served.headers["Cache-Control"] == "no-store"
        assert served.headers["X-Frame-Options"] == "DENY"

        # DNS rebinding: a page of rebind.example whose name now points at 127.0.0.1 reaches this
        # port under its own name, and is answered nothing, whatever it sends.
        for host in (
            f"rebind.example:{port}",
            f"localhost.rebind.example:{port}",
            f"127.0.0.1:{port + 1}",
            "",
        ):
            assert session.get(url, headers={"Host": host}, timeout=10).status_code == 403, host
            assert session.get(f"{url}api/stream", headers={"Host": host}, timeout=10).status_code == 403, (
                host
            )
            refused = session.post(
                action, json={"action": "abort"}, headers={"Host": host, TOKEN_HEADER: token}, timeout=10
            )
            assert refused.status_code == 403, host
        assert session.get(url, headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200

        def post(headers: dict[str, str], **kwargs: Any) -> requests.Response:
            return session.post(action, headers=headers, timeout=30, **kwargs)

        refusals = {
            "no token": post({}, json={"action": "abort"}),
            "a wrong token": post({TOKEN_HEADER: token[:-1] + "x"}, json={"action": "abort"}),
            "another origin": post(
                {TOKEN_HEADER: token, "Origin": "http://rebind.example"}, json={"action": "abort"}
            ),
            "a form": post({TOKEN_HEADER: token}, data={"action": "abort"}),
        }
        assert {why: answer.status_code for why, answer in refusals.items()} == dict.fromkeys(refusals, 403)
        assert post({TOKEN_HEADER: token}, json={"action": "delete"}).status_code == 400
        unknown = session.post(f"{url}api/rollouts/team-a/other/actions", json={"action": "abort"},
                               headers={TOKEN_HEADER: token}, timeout=30)  # fmt: skip
        assert unknown.status_code == 404
        assert ACTION_ANNOTATION not in sandbox.annotations(namespace="team-a")

        with chromium(tmp_path / "profile") as driver:
            # Another site, open in the same browser, tries every way a page can send a request.
            other = AnotherSite(url, action)
            try:
                driver.get(other.url)
                WebDriverWait(driver, 30, poll_frequency=0.2).until(lambda _: driver.title == "done")
                results: dict[str, str] = driver.execute_script(
                    "return Object.fromEntries(Object.entries(results).map(([k, v]) => [k, String(v)]))"
                )
            finally:
                other.close()
            assert results["simple"] == "opaque"  # sent, but without the token: refused
            assert results["with-token-header"].startswith("blocked: TypeError")  # no CORS preflight granted
            assert results["read-page"].startswith("blocked: TypeError")  # the token cannot be read
            assert ACTION_ANNOTATION not in sandbox.annotations(namespace="team-a")

            # The page itself can: its request is on the rollout, with the id the page shows.
            page = Page(driver, url)
            card = page.card_until(
                "team-a", NAME, lambda card: card["phase"] == "Pending", what="the rollout"
            )
            assert card["message"] == "-"
            page.press("team-a", NAME, "pause")
            waiting = page.card_until(
                "team-a", NAME, lambda card: card["answerState"] == "waiting", what="the request sent"
            )
            asked = re.search(r"\(id (dashboard-[0-9a-f]{8})\)", waiting["answer"])
            assert asked is not None, waiting
            assert sandbox.annotations(namespace="team-a")[ACTION_ANNOTATION] == f"pause:{asked.group(1)}"
            assert page.text("#scope") == "all namespaces"
    finally:
        assert dashboard.stop() == 0


# -- starting -----------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_dashboard_that_cannot_serve_says_why_and_another_address_is_warned_of(
    without_operator: Sandbox, tmp_path: Path
) -> None:
    env = without_operator.env()

    def dashboard(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "kubectl"), "lambdarollout", "dashboard", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)

    wrong = dashboard("--context", "nowhere")
    assert wrong.returncode == 4, wrong
    assert wrong.stderr.strip() == (
        "Error: kubectl: Error in configuration: context was not found for specified context: nowhere"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = dashboard("--port", str(port))
    assert busy.returncode == 4, busy
    assert busy.stderr.strip() == (
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; choose another --port"
    )
    assert "Traceback" not in wrong.stderr + busy.stderr

    exposed = Dashboard(tmp_path, env, "--address", "0.0.0.0")
    try:
        assert exposed.err.splitlines()[0] == (
            "warning: serving on 0.0.0.0, not on loopback: whoever reaches this address can load the page "
            "and move the rollouts' traffic with your Kubernetes credentials"
        )
        assert exposed.url == f"http://127.0.0.1:{exposed.port}/"
        session = requests.Session()
        session.trust_env = False
        for host in ("127.0.0.1", socket.gethostname(), "localhost"):
            answer = session.get(exposed.url, headers={"Host": f"{host}:{exposed.port}"}, timeout=10)
            assert answer.status_code == 200, host
        assert (
            session.get(
                exposed.url, headers={"Host": f"rebind.example:{exposed.port}"}, timeout=10
            ).status_code
            == 403
        )
    finally:
        assert exposed.stop() == 0


# -- what the page is given ---------------------------------------------------------------------------------


def test_the_host_rule_takes_ip_literals_and_the_names_of_this_server_only() -> None:
    loopback = host_names("127.0.0.1")
    cases = {
        "127.0.0.1:3100": True,
        "LOCALHOST:3100": True,
        "[::1]:3100": True,
        # An IP literal cannot be rebound by DNS.
        "10.1.2.3:3100": True,
        "127.0.0.1:3101": False,
        "127.0.0.1": False,
        "rebind.example:3100": False,
        "localhost.rebind.example:3100": False,
        "rebind.example@127.0.0.1:3100": False,
        "127.0.0.1:3100/path": False,
        "[::1:3100": False,
        "": False,
    }
    assert {host: host_allowed(host, loopback, 3100) for host in cases} == cases
    assert host_allowed("localhost", loopback, 80)
    assert host_names("dashboard.internal") == {"localhost", "dashboard.internal"}
    assert host_names("0.0.0.0") >= {"localhost", socket.gethostname().lower()}


def _event(
    reason: str, message: str, second: int, *, uid: str = "u-1", kind: str = "Normal"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{NAME}.{1_767_268_800_000_000_000 + second * 1_000_000_000:x}",
            "namespace": "default",
        },
        "involvedObject": {"kind": "LambdaRollout", "name": NAME, "namespace": "default", "uid": uid},
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": f"2026-01-01T12:00:{second:02d}Z",
    }


def test_the_view_is_gets_reading_and_the_chart_follows_the_events() -> None:
    body = {
        "metadata": {"name": NAME, "namespace": "default", "uid": "u-1", "generation": 2},
        "spec": {**rollout(TWO_HOLDS)["spec"], "paused": True},
        "status": {
            "observedGeneration": 2,
            "phase": "Paused",
            "stableVersion": "1",
            "canaryVersion": "2",
            "canaryWeight": 50,
            "currentStepIndex": 3,
            "stepCount": 4,
            "message": "paused by spec.paused at step 4/4 with 50% on version 2",
            "lastAction": {"action": "promote", "id": "dashboard-0a1b2c3d", "result": "Applied",
                           "message": "promote: moved past step 2/4", "at": "2026-01-01T12:00:30Z"},
        },
    }  # fmt: skip
    events = [
        _event("Progressing", "rolling out version 2 over version 1", 0),
        _event("WeightSet", "step 1/4: set weight 10% on version 2", 0),
        # Another object of the same name, deleted since: not this rollout's.
        _event("WeightSet", "step 1/4: set weight 90% on version 2", 5, uid="u-0"),
        _event("PausedByStep", "step 2/4: paused until promoted, 10% on version 2", 1),
        _event("WeightSet", "step 3/4: set weight 50% on version 2", 30),
        _event(
            "AnalysisFailed", "analysis failed: error-rate 5%; rolled back to version 1", 40, kind="Warning"
        ),
        _event("Progressing", "found 50% of traffic on version 2; continuing at step 4/4", 45),
        _event("WeightSet", "promoted version 2: all traffic on it (was 50%)", 50),
        _event("Succeeded", "promoted version 2: all traffic on it", 51),
        _event(
            "RolledBack",
            "rolled back to version 1: spec.version is the stable version (was 100% on version 2)",
            52,
        ),
    ]
    view = dashboard_view(body, events, datetime(2026, 1, 1, 12, 1, tzinfo=UTC))
    assert [(point["at"], point["weight"], point["reason"]) for point in view["history"]] == [
        ("2026-01-01T12:00:00Z", 0.0, "Progressing"),
        ("2026-01-01T12:00:00Z", 10.0, "WeightSet"),
        ("2026-01-01T12:00:30Z", 50.0, "WeightSet"),
        ("2026-01-01T12:00:40Z", 0.0, "AnalysisFailed"),
        ("2026-01-01T12:00:45Z", 50.0, "Progressing"),
        ("2026-01-01T12:00:50Z", 100.0, "WeightSet"),
        ("2026-01-01T12:00:51Z", 100.0, "Succeeded"),
        ("2026-01-01T12:00:52Z", 100.0, "RolledBack"),
    ]
    del view["history"]
    assert view["events"][0] == {
        "type": "Normal",
        "reason": "Progressing",
        "age": "1m",
        "at": "2026-01-01T12:00:00Z",
        "message": "rolling out version 2 over version 1",
    }
    assert [event["reason"] for event in view["events"]] == [
        "Progressing", "WeightSet", "PausedByStep", "WeightSet", "AnalysisFailed", "Progressing", "WeightSet",
        "Succeeded", "RolledBack",
    ]  # fmt: skip
    del view["events"]
    assert view == {
        "namespace": "default",
        "name": NAME,
        "function": NAME,
        "alias": "live",
        "stable": "1",
        "canary": "2",
        "weight": 50.0,
        "phase": "Paused",
        "outcome": "in-progress",
        "step": "4/4",
        "message": "paused by spec.paused at step 4/4 with 50% on version 2",
        "held_by": "spec.paused",
        "steps": [
            {"marker": "done", "number": 1, "description": "setWeight 10"},
            {"marker": "done", "number": 2, "description": "pause until promoted"},
            {"marker": "done", "number": 3, "description": "setWeight 50"},
            {"marker": "->", "number": 4, "description": "pause until promoted"},
            {"marker": "", "number": 5, "description": "promote: all traffic on version 2"},
        ],
        "steps_error": None,
        "details": ["Conditions:  none yet", "Analysis:    none", "Hooks:       none"],
        "last_action": body["status"]["lastAction"],
        "last_action_line": (
            "Last action: promote (id dashboard-0a1b2c3d): Applied 30s ago: promote: moved past step 2/4"
        ),
    }


async def test_kubectl_s_watch_output_is_read_however_it_is_cut_and_laid_out() -> None:
    stream = asyncio.StreamReader()
    modified = {"type": "MODIFIED", "object": {"metadata": {"name": "é"}, "status": {"canaryWeight": 10}}}
    pretty = json.dumps(modified, indent=4, ensure_ascii=False).encode()
    compact = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a"}}}).encode() + b"\n"
    # A compact line, then an indented object cut inside a two-byte character, then a stray value.
    middle = pretty.index("é".encode()) + 1
    for chunk in (compact + pretty[:middle], pretty[middle:], b"\n[1, 2]\n"):
        stream.feed_data(chunk)
    stream.feed_eof()
    assert [item async for item in watch_objects(stream)] == [
        ("ADDED", {"metadata": {"name": "a"}}),
        ("MODIFIED", modified["object"]),
    ]


def test_the_board_sends_what_changed_and_forgets_what_was_deleted() -> None:
    now = [datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)]
    source = DashboardSource(Kubectl("kubectl", Connection()), (), "namespace default")
    board = Board(source, clock=lambda: now[0])
    page = board.subscribe()

    def body(weight: float) -> dict[str, Any]:
        status = {"phase": "Paused", "canaryVersion": "2", "canaryWeight": weight, "currentStepIndex": 1}
        return {
            "metadata": {"name": NAME, "namespace": "default", "uid": "u-1"},
            **rollout(TWO_HOLDS),
            "status": status,
        }

    board.event_changed("ADDED", _event("WeightSet", "step 1/4: set weight 10% on version 2", 0))
    board.rollout_changed("ADDED", body(10))
    board.rollout_changed("MODIFIED", body(10))  # nothing new to show
    now[0] = datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC)
    board.rollout_changed("MODIFIED", body(50))
    board.sweep([])  # deleted while the watch was away
    board.close()
    sent = []
    while (message := page.queue.get_nowait()) is not None:
        kind, data = message.removeprefix("event: ").removesuffix("\n\n").split("\ndata: ")
        sent.append((kind, json.loads(data)))
    assert [kind for kind, _ in sent] == ["rollouts", "rollout", "rollout", "removed"]
    assert sent[0][1] == []
    assert [point["weight"] for point in sent[1][1]["history"]] == [10.0]
    assert sent[1][1]["observed"] == [{"at": "2026-01-01T12:00:00.000Z", "weight": 10.0}]
    assert sent[2][1]["observed"] == [
        {"at": "2026-01-01T12:00:00.000Z", "weight": 10.0},
        {"at": "2026-01-01T12:00:02.000Z", "weight": 50.0},
    ]
    assert sent[3][1] == {"namespace": "default", "name": NAME}
    assert board.views == {}
