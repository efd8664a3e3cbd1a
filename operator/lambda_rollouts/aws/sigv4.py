"""AWS Signature Version 4 for JSON requests, without botocore's request machinery.

Contract:
- ``sign(request, credentials, region=..., service=..., now=...)`` returns the headers to send
  with the request: its own headers plus ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token`` (when
  the credentials carry a session token) and ``Authorization``. Every header given is signed,
  ``host`` included, so the signature is the one botocore's ``SigV4Auth`` computes for the same
  request and headers (tests compare the two).
- ``SignedRequest.path`` is the request path as it is sent, its labels already percent-encoded
  (``encode_label``); like botocore for every service but S3, the canonical path encodes it once
  more. ``query`` pairs are given raw and are encoded here, for the canonical query string and for
  the URL (``query_string``) alike, so the two cannot disagree.
- Signing keys are derived once per (secret key, day, region, service) and kept (a few dozen
  at most: one per role and region); a signature costs two SHA-256 digests and one HMAC.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"


@dataclass(frozen=True)
class SigningCredentials:
    access_key: str
    secret_key: str
    token: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    method: str
    host: str
    # Percent-encoded labels, unencoded slashes: "/2015-03-31/functions/my%3Afn/aliases/live".
    path: str
    query: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def query_string(self) -> str:
        return "&".join(
            f"{key}={value}"
            for key, value in sorted(
                (quote(key, safe=_UNRESERVED), quote(value, safe=_UNRESERVED)) for key, value in self.query
            )
        )


def encode_label(value: str) -> str:
    """A path label as REST-JSON services expect it: everything but unreserved characters encoded."""
    return quote(value, safe=_UNRESERVED)


def sign(
    request: SignedRequest, credentials: SigningCredentials, *, region: str, service: str, now: datetime
) -> dict[str, str]:
    """The headers to send: the request's, plus the date, the token and the signature."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {"Host": request.host, **request.headers, "X-Amz-Date": stamp}
    if credentials.token:
        headers["X-Amz-Security-Token"] = credentials.token
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names = sorted(signed)
    canonical = "\n".join(
        (
            request.method.upper(),
            quote(request.path, safe="/~"),
            request.query_string,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(request.body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


@functools.lru_cache(maxsize=64)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
