"""Kopf's per-watch-event success line of the wake-up handler stays out of the logs."""

from __future__ import annotations

import logging

import pytest

from lambda_rollouts.handlers import build_registry, quiet_wake_handler_logs


def test_the_wake_handler_success_line_is_dropped_and_everything_else_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_wake_handler_logs()
    quiet_wake_handler_logs()  # once per process, however often the operator starts
    objects = logging.getLogger("kopf.objects")
    assert len(objects.filters) == 1
    # Kopf logs "<handler> succeeded." for every handler run; this is how it names ours.
    [wake] = build_registry()._watching.get_all_handlers()
    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        objects.info(f"{wake} succeeded.")
        objects.info("Handler 'finalize' succeeded.")
        objects.error(f"{wake} failed with an exception and will try again in 60 seconds: boom")
    assert [record.getMessage() for record in caplog.records] == [
        "Handler 'finalize' succeeded.",
        "Handler 'wake-on-change' failed with an exception and will try again in 60 seconds: boom",
    ]
