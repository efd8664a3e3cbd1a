"""The dashboard as a user runs and sees it, for the sandbox and the real API server tiers.

- ``Dashboard`` runs ``kubectl lambdarollout dashboard --port 0`` (kubectl finds the plugin on the
  venv's PATH) and reads the URL it prints; ``stop()`` sends SIGTERM, as a terminal's Ctrl-C would
  end it, and returns its exit code.
- ``chromium()`` starts headless Chromium through chromedriver (Debian's packages, installed by
  ``make browser``); a missing browser is an error that says so, never a skip.
- ``Page`` reads a rollout's card as the page shows it (one script reads the whole card, so a
  redraw between two reads cannot mix two views) and presses its buttons; ``until`` waits on a
  condition of the page, never for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .processes import stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)
KUBECTL = Path(sys.executable).parent / "kubectl"

_T = TypeVar("_T")


class Dashboard:
    """``kubectl lambdarollout dashboard`` in a process of its own."""

    def __init__(self, log_dir: Path, env: Mapping[str, str], *args: str) -> None:
        self.out_path, self.err_path = log_dir / "dashboard.out", log_dir / "dashboard.err"
        self._out, self._err = self.out_path.open("wb"), self.err_path.open("wb")
        self.process = subprocess.Popen(
            [str(KUBECTL), "lambdarollout", "dashboard", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=dict(env),
        )
        self.url = self._printed_url()

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def _printed_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.splitlines():
                if "http://" in line:
                    return line[line.index("http://") :].strip()
            if self.process.poll() is not None:
                raise AssertionError(f"the dashboard exited with {self.process.returncode}: {self.err}")
            time.sleep(0.1)
        raise AssertionError(f"the dashboard printed no URL within {timeout}s: {self.out}{self.err}")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def watch_processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of the kubectl watches the dashboard runs now."""
        found = []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if "--watch" in command:
                    found.append((int(pid), command))
        return found

    def stop(self, timeout: float = 20.0) -> int:
        returncode = stop_process(self.process, timeout)
        self._out.close()
        self._err.close()
        return returncode


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"{binary} is missing: run `make browser` (Debian's chromium and chromium-driver)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The machine's proxy settings are not the code under test: the page is on loopback.
    options.add_argument("--no-proxy-server")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Everything a test reads of one rollout's card, as displayed.
_READ_CARD = """
const [namespace, name] = arguments;
const card = [...document.querySelectorAll("article.rollout")]
  .find((node) => node.dataset.namespace === namespace && node.dataset.name === name);
if (!card) return null;
const text = (selector) => card.querySelector(selector).textContent;
const chart = card.querySelector("svg.chart");
const line = chart.querySelector("path.line");
return {
  phase: text(".phase"),
  weight: card.dataset.weight,
  weightText: text(".weight"),
  message: text(".message"),
  held: card.querySelector(".held").hidden ? "" : text(".held"),
  facts: text(".facts"),
  steps: [...card.querySelectorAll(".steps li")].map((item) => [item.dataset.marker, item.textContent]),
  current: [...card.querySelectorAll(".steps li.current")].map((item) => item.textContent),
  details: text(".details"),
  lastAction: text(".last-action"),
  answer: text(".answer"),
  answerState: card.querySelector(".answer").dataset.state || "",
  events: [...card.querySelectorAll(".events tbody tr")].map((row) => row.dataset.reason || ""),
  chartPoints: Number(chart.dataset.points),
  chartLastWeight: line ? line.getAttribute("data-last-weight") : null,
  chartPath: line ? line.getAttribute("d") : null,
  buttons: [...card.querySelectorAll(".actions button")].map((button) => button.dataset.action),
};
"""


class Page:
    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        driver.get(url)

    def card(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.driver.execute_script(_READ_CARD, namespace, name)
        return found

    def text(self, css: str) -> str:
        found: str = self.driver.execute_script(
            "const node = document.querySelector(arguments[0]); return node && !node.hidden ? "
            "node.textContent : '';",
            css,
        )
        return found

    def until(self, check: Callable[[], _T | None], *, timeout: float = 60.0, what: str = "the page") -> _T:
        last: list[Any] = [None]

        def probe(_: WebDriver) -> _T | None:
            result = check()
            last[0] = result
            return result if result is not None and result is not False else None

        try:
            found: _T = WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(probe)
        except TimeoutException:
            raise AssertionError(f"{what}: not shown within {timeout}s; last seen: {last[0]}") from None
        return found

    def card_until(
        self,
        namespace: str,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 60.0,
        what: str,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            card = self.card(namespace, name)
            return card if card is not None and check(card) else None

        return self.until(probe, timeout=timeout, what=f"{namespace}/{name}: {what}")

    def press(self, namespace: str, name: str, action: str, *, confirm: bool = False) -> None:
        self.driver.execute_script(
            """
            const [namespace, name, action] = arguments;
            const card = [...document.querySelectorAll("article.rollout")]
              .find((node) => node.dataset.namespace === namespace && node.dataset.name === name);
            card.querySelector(`.actions button[data-action="${action}"]`).click();
            """,
            namespace,
            name,
            action,
        )
        if confirm:
            self.until(lambda: _alert(self.driver), timeout=10, what="the confirmation").accept()

    def answer(self, namespace: str, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """The card once the operator's answer to the last button pressed is on it."""
        return self.card_until(
            namespace,
            name,
            lambda card: card["answerState"] in ("applied", "rejected", "failed"),
            timeout=timeout,
            what="the operator's answer",
        )

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The whole page, not the window: a viewport as tall as the content (the window's own
        # frame, if any, added).
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        frame = int(self.driver.execute_script("return window.outerHeight - window.innerHeight"))
        self.driver.set_window_size(1280, max(600, height + frame))
        assert self.driver.save_screenshot(str(path)), path


def _alert(driver: WebDriver) -> Any:
    with contextlib.suppress(NoAlertPresentException):
        return driver.switch_to.alert
    return None
