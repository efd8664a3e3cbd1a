"""Kopf glue details: the wake-up handler's log line, and the worker threads of AWS calls."""

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


async def test_aws_calls_get_as_many_worker_threads_as_the_settings_say() -> None:
    import asyncio
    import threading

    from lambda_rollouts.handlers import size_worker_threads
    from lambda_rollouts.settings import Settings

    size_worker_threads(Settings(aws_max_concurrent_calls=12))
    # Twelve blocking calls that each wait for all the others: they finish only if all twelve run
    # at once (asyncio's own default on two CPUs runs six).
    barrier = threading.Barrier(12, timeout=10)
    await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(12)))
