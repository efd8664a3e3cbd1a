"""The hook contract's shared parts: dispatching, the fake invoker, retries and judging answers."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from lambda_rollouts.hooks import (
    EXCERPT_LIMIT,
    MAX_RETRY_DELAY_SECONDS,
    REDACTED,
    AnswerJudgement,
    HookDispatcher,
    HookOutcome,
    excerpt,
    hook_payload,
    invoke_with_retries,
    judge_answer,
    redact_credentials,
    retry_delay,
)
from lambda_rollouts.model import Hook, HookPoint
from lambda_rollouts.observed import Target
from lambda_rollouts.testing.hooks import FakeHookInvoker

TARGET = Target(function_name="checkout-api", alias="live", region="eu-west-1")
LAMBDA_HOOK = Hook(function_name="checkout-smoke", qualifier="live")
HTTP_HOOK = Hook(url="https://hooks.example.com/smoke")
PAYLOAD = hook_payload(
    namespace="default",
    name="checkout",
    function_name="checkout-api",
    alias="live",
    stable_version="41",
    new_version="42",
    new_version_arn="arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:42",
    point=HookPoint.BEFORE_ALLOW_TRAFFIC,
)


# -- the dispatcher ----------------------------------------------------------------------------


async def test_dispatcher_sends_function_hooks_to_lambda_and_url_hooks_to_http() -> None:
    lambda_invoker, http_invoker = FakeHookInvoker(), FakeHookInvoker()
    http_invoker.answer(HTTP_HOOK.url or "", False)
    dispatcher = HookDispatcher(lambda_invoker, http_invoker)

    by_lambda = await dispatcher.invoke(TARGET, LAMBDA_HOOK, PAYLOAD)
    by_http = await dispatcher.invoke(TARGET, HTTP_HOOK, PAYLOAD)

    assert [hook for _, hook, _ in lambda_invoker.calls] == [LAMBDA_HOOK]
    assert [hook for _, hook, _ in http_invoker.calls] == [HTTP_HOOK]
    assert by_lambda.succeeded
    assert not by_http.succeeded


async def test_dispatcher_refuses_a_hook_without_a_target() -> None:
    # Only model_construct (no validation) can build such a hook; the dispatcher must not guess.
    hook = Hook.model_construct(function_name=None, url=None)
    dispatcher = HookDispatcher(FakeHookInvoker(), FakeHookInvoker())
    with pytest.raises(ValueError, match="functionName or a url"):
        await dispatcher.invoke(TARGET, hook, PAYLOAD)


# -- the fake ----------------------------------------------------------------------------------


async def test_fake_succeeds_by_default_and_records_each_call() -> None:
    fake = FakeHookInvoker()
    outcome = await fake.invoke(TARGET, LAMBDA_HOOK, PAYLOAD)
    assert outcome == HookOutcome(
        succeeded=True, message="function checkout-smoke:live succeeded", attempts=1
    )
    assert fake.calls == [(TARGET, LAMBDA_HOOK, PAYLOAD)]


async def test_fake_records_a_copy_of_the_payload() -> None:
    fake = FakeHookInvoker()
    payload = dict(PAYLOAD)
    await fake.invoke(TARGET, LAMBDA_HOOK, payload)
    payload["phase"] = "changed afterwards"
    assert fake.calls[0][2] == PAYLOAD


async def test_fake_bare_false_fails_forever_with_a_clear_message() -> None:
    fake = FakeHookInvoker()
    fake.answer("checkout-smoke", False)
    outcomes = [await fake.invoke(TARGET, LAMBDA_HOOK, PAYLOAD) for _ in range(3)]
    assert [outcome.succeeded for outcome in outcomes] == [False, False, False]
    assert (
        outcomes[0].message
        == "function checkout-smoke:live failed: the fake hook invoker was told to fail it"
    )
    assert outcomes[0].attempts == 1


async def test_fake_takes_one_queued_outcome_per_call_then_repeats_the_last() -> None:
    fake = FakeHookInvoker()
    given = HookOutcome(succeeded=False, message="smoke test 3 failed", attempts=3)
    fake.answer("checkout-smoke", False, given, True)
    outcomes = [await fake.invoke(TARGET, LAMBDA_HOOK, PAYLOAD) for _ in range(5)]
    assert [outcome.succeeded for outcome in outcomes] == [False, False, True, True, True]
    assert outcomes[1] == given


async def test_fake_answers_queue_up_behind_earlier_ones() -> None:
    fake = FakeHookInvoker()
    fake.answer("checkout-smoke", False)
    fake.answer("checkout-smoke", True)
    outcomes = [await fake.invoke(TARGET, LAMBDA_HOOK, PAYLOAD) for _ in range(3)]
    assert [outcome.succeeded for outcome in outcomes] == [False, True, True]


async def test_fake_keys_by_url_and_keeps_hooks_apart() -> None:
    fake = FakeHookInvoker()
    fake.answer("https://hooks.example.com/smoke", False)
    assert not (await fake.invoke(TARGET, HTTP_HOOK, PAYLOAD)).succeeded
    assert (await fake.invoke(TARGET, LAMBDA_HOOK, PAYLOAD)).succeeded
    assert (await fake.invoke(TARGET, Hook(url="https://hooks.example.com/other"), PAYLOAD)).succeeded


# -- retries -----------------------------------------------------------------------------------


class ScriptedAttempts:
    """Answers attempts from a script (True/False per attempt) and notes when each one started."""

    def __init__(self, *succeeds: bool) -> None:
        self.script = list(succeeds)
        self.started_at: list[float] = []
        self.numbers: list[int] = []

    async def __call__(self, number: int) -> HookOutcome:
        self.started_at.append(asyncio.get_running_loop().time())
        self.numbers.append(number)
        succeeded = self.script[len(self.numbers) - 1]
        # attempts=99 shows that the helper sets the count itself.
        return HookOutcome(succeeded=succeeded, message=f"attempt {number}", attempts=99)


def offsets(times: list[float]) -> list[float]:
    return [round(time - times[0], 3) for time in times]


@pytest.mark.looptime
async def test_retries_stop_at_the_first_success() -> None:
    attempts = ScriptedAttempts(False, True, True)
    outcome = await invoke_with_retries(Hook(function_name="smoke", retries=2), attempts)
    assert outcome == HookOutcome(succeeded=True, message="attempt 2", attempts=2)
    assert attempts.numbers == [1, 2]
    assert offsets(attempts.started_at) == [0.0, 1.0]


@pytest.mark.looptime
async def test_retries_return_the_last_failure_after_doubling_delays() -> None:
    attempts = ScriptedAttempts(False, False, False, False)
    outcome = await invoke_with_retries(
        Hook(function_name="smoke", retries=3), attempts, retry_delay_seconds=0.5
    )
    assert outcome == HookOutcome(succeeded=False, message="attempt 4", attempts=4)
    assert offsets(attempts.started_at) == [0.0, 0.5, 1.5, 3.5]


@pytest.mark.looptime
async def test_no_retries_means_one_attempt_and_no_wait() -> None:
    attempts = ScriptedAttempts(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = await invoke_with_retries(Hook(function_name="smoke", retries=0), attempts)
    assert (outcome.succeeded, outcome.attempts) == (False, 1)
    assert loop.time() == start


@pytest.mark.looptime
async def test_retry_delays_are_capped() -> None:
    attempts = ScriptedAttempts(*[False] * 11)
    await invoke_with_retries(Hook(function_name="smoke", retries=10), attempts, retry_delay_seconds=10.0)
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(attempts.started_at)]
    assert gaps == [10.0, 20.0] + [MAX_RETRY_DELAY_SECONDS] * 8


@pytest.mark.parametrize(
    ("failed_attempts", "first_delay", "expected"),
    [(1, 1.0, 1.0), (2, 1.0, 2.0), (3, 1.0, 4.0), (5, 1.0, 16.0), (6, 1.0, 30.0), (3, 0.0, 0.0)],
)
def test_retry_delay_doubles_up_to_the_cap(failed_attempts: int, first_delay: float, expected: float) -> None:
    assert retry_delay(failed_attempts, first_delay) == expected


async def test_each_attempt_outcome_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lambda_rollouts.hooks")
    await invoke_with_retries(
        Hook(function_name="smoke", retries=1), ScriptedAttempts(False, True), retry_delay_seconds=0
    )
    assert [record.getMessage() for record in caplog.records] == [
        "hook attempt 1 of 2 failed: attempt 1",
        "hook attempt 2 of 2 succeeded: attempt 2",
    ]
    assert {record.levelno for record in caplog.records} == {logging.INFO}


# -- judging answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"", AnswerJudgement(True, None), id="empty"),
        pytest.param(b"OK", AnswerJudgement(True, None), id="plain text"),
        pytest.param(b"<html>failed</html>", AnswerJudgement(True, None), id="html"),
        pytest.param(b"\xff\xfe\xfa", AnswerJudgement(True, None), id="not utf-8"),
        pytest.param(b"null", AnswerJudgement(True, None), id="json null"),
        pytest.param(b'"failed"', AnswerJudgement(True, None), id="json string"),
        pytest.param(b'[{"status": "failed"}]', AnswerJudgement(True, None), id="json list"),
        pytest.param(b"{}", AnswerJudgement(True, None), id="empty object"),
        pytest.param(b'{"status": "ok"}', AnswerJudgement(True, None), id="status ok"),
        pytest.param(b'{"status": "Succeeded", "message": "all good"}', AnswerJudgement(True, "all good")),
        pytest.param(b'{"status": "failed"}', AnswerJudgement(False, None), id="failed"),
        pytest.param(b'{"status": "FAILED"}', AnswerJudgement(False, None), id="upper case"),
        pytest.param(b'{"status": " Failed "}', AnswerJudgement(False, None), id="mixed case, spaces"),
        pytest.param(b'{"status": false}', AnswerJudgement(True, None), id="status not a string"),
        pytest.param(
            b'{"status": "failed", "message": "smoke test 3 failed"}',
            AnswerJudgement(False, "smoke test 3 failed"),
            id="failed with message",
        ),
        pytest.param(
            b'{"status": "failed", "message": "line one\\n   line two"}',
            AnswerJudgement(False, "line one line two"),
            id="message on one line",
        ),
        pytest.param(
            b'{"status": "failed", "message": {"failed": 3}}',
            AnswerJudgement(False, '{"failed": 3}'),
            id="message not a string",
        ),
        pytest.param(
            b'{"status": "failed", "message": ""}', AnswerJudgement(False, None), id="empty message"
        ),
        pytest.param(b"[" * 100_000, AnswerJudgement(True, None), id="nested too deep"),
    ],
)
def test_judge_answer(body: bytes, expected: AnswerJudgement) -> None:
    assert judge_answer(body) == expected


def test_judge_answer_shortens_long_messages() -> None:
    judgement = judge_answer(b'{"status": "failed", "message": "' + b"x" * 1000 + b'"}')
    assert judgement.message is not None
    assert len(judgement.message) == EXCERPT_LIMIT
    assert judgement.message.endswith("…")


def test_judgement_outcome_names_the_hook_and_quotes_the_message() -> None:
    failed = judge_answer(b'{"status": "failed", "message": "smoke test 3 failed"}').outcome_for(HTTP_HOOK)
    assert failed == HookOutcome(
        succeeded=False,
        message='webhook https://hooks.example.com/smoke answered status "failed": "smoke test 3 failed"',
        attempts=1,
        final=True,
    )
    passed = judge_answer(b"OK").outcome_for(LAMBDA_HOOK)
    assert passed == HookOutcome(succeeded=True, message="function checkout-smoke:live succeeded", attempts=1)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 200, "short"),
        ("  spread \n over\tlines ", 200, "spread over lines"),
        ("abcdef", 6, "abcdef"),
        ("abcdefg", 6, "abcde…"),
    ],
)
def test_excerpt(text: str, limit: int, expected: str) -> None:
    assert excerpt(text, limit) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URLs keep scheme, host and path; their userinfo and query string go.
        (
            "POST https://deployer:s3cret@ci.example.com/hooks?token=s3cret#top failed",
            f"POST https://{REDACTED}@ci.example.com/hooks?{REDACTED}#top failed",
        ),
        ("see ftp://user@files.example.com/x", f"see ftp://{REDACTED}@files.example.com/x"),
        ("see https://ci.example.com/hooks/42", "see https://ci.example.com/hooks/42"),
        # Headers and fields named like credentials lose their value, to the end of the line.
        ("Authorization: Bearer abc.def.ghi", f"Authorization: {REDACTED}"),
        ("proxy-authorization:Basic dXNlcjpwYXNz", f"proxy-authorization:{REDACTED}"),
        ("Cookie: session=abc; theme=dark\nok", f"Cookie: {REDACTED}\nok"),
        ("Set-Cookie: id=1", f"Set-Cookie: {REDACTED}"),
        ("X-Api-Key: k-123", f"X-Api-Key: {REDACTED}"),
        ("x-amz-security-token: FwoGZX", f"x-amz-security-token: {REDACTED}"),
        (
            '{"error": "denied", "access_token": "abc", "n": 1}',
            f'{{"error": "denied", "access_token": {REDACTED}',
        ),
        ('{"password":"hunter2"}', f'{{"password":{REDACTED}'),
        ("client_secret=abc&x=1", f"client_secret={REDACTED}"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", f"AWS_SECRET_ACCESS_KEY={REDACTED}"),
        # Tokens that carry no name.
        ("upstream said Bearer eyJhbGciOi.x.y", f"upstream said Bearer {REDACTED}"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", f"key {REDACTED} leaked"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig here", f"jwt {REDACTED} here"),
        ("Basic dXNlcjpwYXNzd29yZA== sent", f"Basic {REDACTED} sent"),
        # Plain words stay.
        ("basic checks failed: 3 of 12", "basic checks failed: 3 of 12"),
        ("the token expired", "the token expired"),
        ("smoke test 3 failed: 502 from /cart", "smoke test 3 failed: 502 from /cart"),
    ],
)
def test_redact_credentials(text: str, expected: str) -> None:
    assert redact_credentials(text) == expected


def test_an_excerpt_is_redacted_before_it_is_cut() -> None:
    body = "HTTP/1.1 500\nAuthorization: Bearer " + "t" * 300 + "\nretry later"
    assert excerpt(body) == f"HTTP/1.1 500 Authorization: {REDACTED} retry later"
    assert len(excerpt("word " * 1000)) == EXCERPT_LIMIT
