"""Fixtures for the fault suite: moto as a server, and botocore's retry sleeps cut short.

The Kubernetes emulator and its client are the operator suite's fixtures, imported from there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import botocore.endpoint
import pytest
from tests.operator.conftest import api, kube

from lambda_rollouts.sandbox.aws import MotoSandbox

__all__ = ["api", "fast_retries", "kube", "moto_server"]

# botocore's backoff after a throttle is up to 1, 2, 4 s for the 2nd, 3rd, 4th attempt: real
# seconds in the worker thread, which fast-forwarded loop time cannot skip. Cut to a hundredth.
RETRY_SLEEP_SCALE = 0.01


class RetrySleeps:
    """botocore.endpoint's view of the ``time`` module, with retry sleeps scaled down and recorded.

    botocore sleeps between attempts with ``time.sleep`` in ``botocore.endpoint`` (the only use of
    ``time`` there); replacing that module's name for it leaves every other module's clock alone.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.asked: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        time.sleep(seconds * self.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> RetrySleeps:
    sleeps = RetrySleeps(RETRY_SLEEP_SCALE)
    monkeypatch.setattr(botocore.endpoint, "time", sleeps)
    return sleeps


@pytest.fixture
def moto_server() -> Iterator[MotoSandbox]:
    # A server rather than mock_aws: an injected answer must keep the request from moto too, and
    # mock_aws answers in a before-send handler that botocore calls whatever answered first.
    with MotoSandbox() as server:
        yield server
