"""What the unit tests of the reconcile service and the webhook invoker give them besides the fakes
of ``lambda_rollouts.testing``.

- ``Events`` records the Events a pass posts (``posted``), and their reasons in order (``reasons``).
- ``seed_checkout(fake, versions)`` gives a fake Lambda the function ``checkout-api`` with versions
  1 to ``versions`` published and its alias ``live`` on version 1.
- ``MappedResolver`` answers for the names it was given, as a DNS server would, and records the
  names it was asked for (``asked``).
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from lambda_rollouts.planner import Event
from lambda_rollouts.testing.fake_lambda import FakeLambda


class Events:
    def __init__(self) -> None:
        self.posted: list[Event] = []

    def post(self, event: Event) -> None:
        self.posted.append(event)

    @property
    def reasons(self) -> list[str]:
        return [event.reason.value for event in self.posted]


def seed_checkout(fake: FakeLambda, versions: int = 2) -> FakeLambda:
    fake.add_function("checkout-api")
    for _ in range(versions):
        fake.publish_version("checkout-api")
    fake.put_alias("checkout-api", "live", "1")
    return fake


class MappedResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        pass
