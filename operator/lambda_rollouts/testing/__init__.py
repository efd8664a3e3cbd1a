"""Test doubles and fault injection, for the tests, the benchmarks and nothing else.

No production module imports this package (an import-linter contract says so): the operator's
code paths carry no hook for what is here. Everything in it works from the outside, through the
same interfaces the real systems implement or through botocore's own event system:

- ``fake_lambda.FakeLambda``: a strict in-memory ``AliasRouter``;
- ``fake_cloudwatch.FakeCloudWatch``: an in-memory ``MetricProvider``;
- ``hooks.FakeHookInvoker``: a ``HookInvoker`` that answers what it is told;
- ``kube.RecordingStatusWriter``: a ``StatusWriter`` that keeps what it is given;
- ``faults.FaultInjector``: throttling, AWS-side errors, conflicts and network failures
  injected into botocore clients through their ``before-send`` event.
"""
