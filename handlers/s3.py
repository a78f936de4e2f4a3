"""S3: write each delivery document as JSON at a deterministic key (any S3-compatible store).

A retry or a replay writes the same key again, so the bucket holds one object per analysis
(enable bucket versioning to keep the history). Credentials come from the standard AWS chain
(environment, shared profile, web identity, instance metadata) as botocore reads it.

Failures are classified once per attempt:

- missing bucket, denied access, unknown key id, bad signature, KMS errors, invalid arguments,
  missing credentials -> :class:`PermanentDeliveryError` naming the S3 error code;
- ``SlowDown``, throttling, 503 -> :class:`RateLimitedError`;
- other 5xx, timeouts, connection errors -> :class:`TransientDeliveryError`.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_lib
import json
import logging
import re
import time
from contextlib import AsyncExitStack
from datetime import UTC
from typing import Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from pydantic import Field, field_validator, model_validator

from handlers import _http
from handlers._options import http_url, placeholders
from receiver.delivery import (
    Delivery,
    DeliveryError,
    HandlerContext,
    HandlerOptions,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)

KEY_VARIABLES = frozenset({"date", "session_id", "analysis_id", "status"})
DEFAULT_KEY = "analyses/{date}/{session_id}/{analysis_id}.json"
# A value becomes one key segment: it may not be empty, start with a dot, or hold a slash.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_RATE_LIMIT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_TRANSIENT_CODES = frozenset(
    {"InternalError", "RequestTimeout", "ServiceUnavailable", "ExpiredToken", "RequestTimeTooSkewed"}
)
_PERMANENT_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "the bucket does not exist",
    "NotFound": "the bucket does not exist",
    "AccessDenied": "access denied (check the IAM policy, and the KMS key policy with aws:kms)",
    "403": "access denied (check the IAM policy)",
    "InvalidAccessKeyId": "the AWS access key id is unknown",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key id",
    "PermanentRedirect": "the bucket is in another region (set region)",
    "InvalidStorageClass": "the storage_class is not supported",
}


class Options(HandlerOptions):
    """``bucket`` and ``key`` template; optional encryption, storage class, gzip, transcript."""

    type: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    key: str = DEFAULT_KEY
    endpoint_url: str | None = None
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = Field(default=None, min_length=1)
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z][A-Z_]*$")
    gzip: bool = False
    include_transcript: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("key")
    @classmethod
    def _key_is_valid(cls, value: str) -> str:
        check_key_template(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        return http_url(value, "endpoint_url") if value is not None else None

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> Options:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        return self


def check_key_template(template: str) -> frozenset[str]:
    """Validate a key template (``str.format`` placeholders); return the placeholders it uses."""
    used = placeholders(template, KEY_VARIABLES, "key")
    sample = template.format(date="2026-01-01", session_id="s", analysis_id="a", status="completed")
    segments = sample.split("/")
    if sample.startswith("/") or any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("key may not start with '/', contain '//', or have '.' or '..' segments")
    if not {"session_id", "analysis_id"} & used:
        raise ValueError(
            "key must contain {session_id} or {analysis_id}, or every call overwrites one object"
        )
    if len(sample.encode()) > 900:
        raise ValueError("key is too long")
    return frozenset(used)


def object_key(template: str, delivery: Delivery) -> str:
    """The deterministic key of ``delivery``; refuses values that could escape their segment."""
    created = delivery.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    analysis = delivery.document.get("analysis")
    analysis_id = delivery.analysis_id or (analysis.get("id") if isinstance(analysis, dict) else None)
    values = {
        "date": created.astimezone(UTC).strftime("%Y-%m-%d"),
        "session_id": delivery.session_id,
        "analysis_id": analysis_id or "no-analysis",
        "status": delivery.status,
    }
    for name, value in values.items():
        if not isinstance(value, str) or not _SAFE_VALUE.match(value):
            raise PermanentDeliveryError(f"s3: {name} {str(value)[:40]!r} is not safe in an object key")
    return template.format_map(values)


def transcript_key(key: str) -> str:
    """``a/b.json`` -> ``a/b.transcript.json``."""
    return (key.removesuffix(".json") if key.endswith(".json") else key) + ".transcript.json"


def classify(exc: Exception, bucket: str) -> DeliveryError:
    """Translate a botocore/aiohttp failure into our delivery error (no secret in the reason)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or meta.get("HTTPStatusCode") or "unknown")
        status = int(meta.get("HTTPStatusCode") or 0)
        if code in _RATE_LIMIT_CODES or status in (429, 503):
            headers = meta.get("HTTPHeaders") or {}
            seconds = _http.retry_after(headers, time.time())
            return RateLimitedError(f"s3: {code} on bucket {bucket}", retry_after=seconds)
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientDeliveryError(f"s3: {code} on bucket {bucket}")
        hint = _PERMANENT_HINTS.get(code) or ("KMS refused the key" if code.startswith("KMS") else None)
        return PermanentDeliveryError(f"s3: {code} on bucket {bucket}" + (f": {hint}" if hint else ""))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentDeliveryError("s3: no usable AWS credentials in the standard chain")
    if isinstance(exc, ParamValidationError):
        return PermanentDeliveryError(f"s3: request rejected by botocore ({type(exc).__name__})")
    if isinstance(exc, HTTPClientError | TimeoutError | aiohttp.ClientError | OSError | BotoCoreError):
        return TransientDeliveryError(f"s3: {type(exc).__name__} talking to the store")
    return TransientDeliveryError(f"s3: unexpected {type(exc).__name__}")


def encode(payload: Any, *, compress: bool) -> bytes:
    """JSON bytes; gzip with a fixed mtime so a replay writes identical bytes."""
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return gzip_lib.compress(body, mtime=0) if compress else body


class S3Handler:
    """One bucket destination; the aiobotocore client is created on first use."""

    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._options = options
        self._context = context
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                config = AioConfig(
                    connect_timeout=self._options.timeout_seconds,
                    read_timeout=self._options.timeout_seconds,
                    retries={"total_max_attempts": 1},  # one attempt per deliver(): the core retries
                    user_agent_extra=self._context.user_agent,
                )
                creator = get_session().create_client(
                    "s3",
                    region_name=self._options.region,
                    endpoint_url=self._options.endpoint_url,
                    config=config,
                )
                self._client = await self._stack.enter_async_context(creator)
            return self._client

    def _put_args(self, key: str, body: bytes, delivery: Delivery) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": self._options.bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/json",
            "Metadata": {"delivery-id": delivery.id, "session-id": delivery.session_id},
        }
        if self._options.gzip:
            args["ContentEncoding"] = "gzip"
        if self._options.sse:
            args["ServerSideEncryption"] = self._options.sse
        if self._options.kms_key_id:
            args["SSEKMSKeyId"] = self._options.kms_key_id
        if self._options.storage_class:
            args["StorageClass"] = self._options.storage_class
        return args

    async def deliver(self, delivery: Delivery) -> None:
        key = object_key(self._options.key, delivery)
        writes = []
        if self._options.include_transcript:
            try:
                transcript = await self._context.kallglot.get_transcript(delivery.session_id)
            except DeliveryError:
                raise
            except Exception as exc:
                raise TransientDeliveryError("s3: could not fetch the transcript from Kallglot") from exc
            # The transcript goes first: a document in the bucket implies its transcript is there.
            writes.append((transcript_key(key), transcript))
        writes.append((key, delivery.document))
        try:
            client = await self._s3()
            for target, payload in writes:
                body = encode(payload, compress=self._options.gzip)
                await client.put_object(**self._put_args(target, body, delivery))
        except DeliveryError:
            raise
        except Exception as exc:
            raise classify(exc, self._options.bucket) from exc
        log.info("s3.delivered", extra={"handler": self.name, "delivery_id": delivery.id, "key": key})

    async def probe(self) -> None:
        try:
            client = await self._s3()
            await client.head_bucket(Bucket=self._options.bucket)
        except Exception as exc:
            raise classify(exc, self._options.bucket) from exc

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None


def build(options: Options, context: HandlerContext) -> S3Handler:
    """Create the S3 handler (no I/O until the first delivery or probe)."""
    return S3Handler(options, context)
