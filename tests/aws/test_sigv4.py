"""The SigV4 signer gives the signature botocore's ``SigV4Auth`` gives for the same request."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambda_rollouts.aws.sigv4 import SignedRequest, SigningCredentials, encode_label, sign

NOW = datetime(2026, 11, 26, 17, 38, 6, tzinfo=UTC)
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:checkout-api"


def botocore_headers(request: SignedRequest, credentials: SigningCredentials, region: str) -> dict[str, str]:
    url = f"https://{request.host}{request.path}"
    if request.query:
        url += "?" + request.query_string
    aws_request = AWSRequest(method=request.method, url=url, data=request.body, headers=dict(request.headers))
    signer = botocore.auth.SigV4Auth(
        Credentials(credentials.access_key, credentials.secret_key, credentials.token), "lambda", region
    )
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: NOW.replace(tzinfo=None)  # type: ignore[assignment]
    try:
        signer.add_auth(aws_request)
    finally:
        botocore.auth.get_current_datetime = original  # type: ignore[assignment]
    return dict(aws_request.headers.items())


@pytest.mark.parametrize(
    "request_",
    [
        SignedRequest(
            "GET", "lambda.eu-west-1.amazonaws.com", "/2015-03-31/functions/checkout-api/aliases/live"
        ),
        SignedRequest(
            "GET",
            "127.0.0.1:4566",
            f"/2015-03-31/functions/{encode_label(ARN)}/configuration",
            query=[("Qualifier", "12")],
        ),
        SignedRequest(
            "GET",
            "lambda.eu-west-1.amazonaws.com",
            "/2015-03-31/functions/checkout-api/versions",
            query=[("MaxItems", "50"), ("Marker", "a b/c+d=")],
        ),
        SignedRequest(
            "PUT",
            "lambda.eu-west-1.amazonaws.com",
            "/2015-03-31/functions/checkout-api/aliases/live",
            headers={"Content-Type": "application/json"},
            body=b'{"FunctionVersion":"1","RoutingConfig":{"AdditionalVersionWeights":{"2":0.1}}}',
        ),
    ],
    ids=["get", "arn-label-and-query", "query-to-encode", "put-with-body"],
)
@pytest.mark.parametrize("token", [None, "session-token"])
def test_signature_matches_botocore(request_: SignedRequest, token: str | None) -> None:
    credentials = SigningCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = sign(request_, credentials, region="eu-west-1", service="lambda", now=NOW)
    theirs = botocore_headers(request_, credentials, "eu-west-1")
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"] == "20261126T173806Z"
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token") == token


def test_a_different_secret_or_day_signs_differently() -> None:
    request = SignedRequest("GET", "h", "/p")
    one = sign(request, SigningCredentials("A", "secret-1"), region="eu-west-1", service="lambda", now=NOW)
    other = sign(request, SigningCredentials("A", "secret-2"), region="eu-west-1", service="lambda", now=NOW)
    later = sign(
        request,
        SigningCredentials("A", "secret-1"),
        region="eu-west-1",
        service="lambda",
        now=NOW.replace(day=27),
    )
    signatures = {headers["Authorization"].rpartition("=")[2] for headers in (one, other, later)}
    assert len(signatures) == 3


def test_labels_are_encoded_like_rest_json_expects() -> None:
    assert encode_label(ARN) == "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Acheckout-api"
    assert encode_label("a/b c~") == "a%2Fb%20c~"
