"""The s3 handler against moto's S3 server on loopback."""

from __future__ import annotations

import gzip
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from pydantic import ValidationError

from handlers import s3
from receiver.delivery import (
    Delivery,
    HandlerContext,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)

MakeDocument = Callable[..., dict[str, Any]]
MakeDelivery = Callable[..., Delivery]
KEY = "analyses/2026-03-26/sess_01HXYZ123456789/anl_01HDEF456789012.json"


@pytest.fixture
async def client(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=moto_endpoint) as c:
        yield c


@pytest.fixture
async def bucket(client: Any) -> str:
    name = f"calls-{uuid.uuid4().hex[:12]}"
    await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def make_handler(
    moto_endpoint: str, bucket: str, context: HandlerContext
) -> AsyncIterator[Callable[..., s3.S3Handler]]:
    """Build handlers on the test bucket; all are closed when the test ends."""
    handlers: list[s3.S3Handler] = []

    def make(**values: Any) -> s3.S3Handler:
        base = {"name": "archive", "type": "s3", "bucket": bucket, "endpoint_url": moto_endpoint}
        handler = s3.build(s3.Options.model_validate(base | values), context)
        handlers.append(handler)
        return handler

    yield make
    for handler in handlers:
        await handler.aclose()


async def read(client: Any, bucket: str, key: str) -> tuple[dict[str, Any], bytes]:
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as stream:
        body = await stream.read()
    return response, body


async def keys(client: Any, bucket: str) -> list[str]:
    listing = await client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


# --- options ------------------------------------------------------------------------------------


def options(**values: Any) -> s3.Options:
    return s3.Options.model_validate({"name": "archive", "type": "s3", "bucket": "call-analyses"} | values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"key": "a/{secret}.json"}, "unknown", id="unknown-placeholder"),
        pytest.param({"key": "a/{session_id.__dict__}"}, "unknown", id="attribute-access"),
        pytest.param({"key": "a/{session_id:>10}"}, "format spec", id="format-spec"),
        pytest.param({"key": "a/{session_id"}, "not a valid format", id="malformed"),
        pytest.param({"key": "/a/{session_id}.json"}, "may not start", id="leading-slash"),
        pytest.param({"key": "a//{session_id}.json"}, "may not start", id="empty-segment"),
        pytest.param({"key": "a/../{session_id}.json"}, "may not start", id="dot-dot"),
        pytest.param({"key": "a/{date}.json"}, "must contain", id="one-object-for-all"),
        pytest.param({"kms_key_id": "alias/x"}, "needs sse", id="kms-key-without-kms"),
        pytest.param({"sse": "rot13"}, "AES256", id="unknown-sse"),
        pytest.param({"bucket": "Bad_Bucket"}, "pattern", id="bad-bucket-name"),
        pytest.param({"endpoint_url": "minio:9000"}, "http", id="endpoint-not-url"),
        pytest.param({"access_key": "AKIA"}, "Extra inputs", id="no-credential-options"),
    ],
)
def test_invalid_options_are_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        options(**values)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"session_id": "../../etc"}, "session_id", id="dot-dot"),
        pytest.param({"session_id": "sess/1"}, "session_id", id="slash"),
        pytest.param({"session_id": ".hidden"}, "session_id", id="leading-dot"),
        pytest.param({"analysis_id": "anl_1/../x"}, "analysis_id", id="analysis-id"),
    ],
)
def test_key_values_cannot_escape_their_segment(
    overrides: dict[str, Any], reason: str, make_delivery: MakeDelivery
) -> None:
    with pytest.raises(PermanentDeliveryError, match=reason):
        s3.object_key(s3.DEFAULT_KEY, make_delivery(**overrides))


def test_key_date_is_the_utc_day_of_the_delivery(make_delivery: MakeDelivery) -> None:
    late_in_berlin = datetime(2026, 3, 27, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    key = s3.object_key("{date}/{status}/{session_id}.json", make_delivery(created_at=late_in_berlin))
    assert key == "2026-03-26/completed/sess_01HXYZ123456789.json"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        pytest.param("NoSuchBucket", 404, PermanentDeliveryError, id="no-such-bucket"),
        pytest.param("AccessDenied", 403, PermanentDeliveryError, id="access-denied"),
        pytest.param("InvalidAccessKeyId", 403, PermanentDeliveryError, id="bad-key-id"),
        pytest.param("SignatureDoesNotMatch", 403, PermanentDeliveryError, id="bad-secret"),
        pytest.param("KMS.NotFoundException", 400, PermanentDeliveryError, id="kms"),
        pytest.param("SlowDown", 503, RateLimitedError, id="slow-down"),
        pytest.param("ThrottlingException", 400, RateLimitedError, id="throttling"),
        pytest.param("ServiceUnavailable", 503, RateLimitedError, id="503"),
        pytest.param("InternalError", 500, TransientDeliveryError, id="internal-error"),
        pytest.param("RequestTimeout", 400, TransientDeliveryError, id="request-timeout"),
    ],
)
def test_s3_error_codes_are_classified(code: str, status: int, expected: type[Exception]) -> None:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    error = ClientError(response, "PutObject")
    classified = s3.classify(error, "call-analyses")
    assert type(classified) is expected
    assert code in classified.reason


# --- delivery -----------------------------------------------------------------------------------


async def test_document_is_written_at_the_deterministic_key(
    make_handler: Callable[..., s3.S3Handler], client: Any, bucket: str, make_delivery: MakeDelivery
) -> None:
    handler = make_handler()
    delivery = make_delivery()
    await handler.deliver(delivery)
    response, body = await read(client, bucket, KEY)
    assert json.loads(body) == delivery.document
    assert response["ContentType"] == "application/json"
    assert response["Metadata"]["delivery-id"] == delivery.id


async def test_replay_overwrites_the_same_object(
    make_handler: Callable[..., s3.S3Handler], client: Any, bucket: str, make_delivery: MakeDelivery
) -> None:
    handler = make_handler()
    for attempt in (1, 2, 3):
        await handler.deliver(make_delivery(attempt=attempt))
    assert await keys(client, bucket) == [KEY]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"sse": "AES256"}, {"ServerSideEncryption": "AES256"}, id="aes256"),
        pytest.param(
            {"sse": "aws:kms", "kms_key_id": "alias/calls"},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/calls"},
            id="kms",
        ),
        pytest.param({"storage_class": "STANDARD_IA"}, {"StorageClass": "STANDARD_IA"}, id="storage-class"),
    ],
)
async def test_encryption_and_storage_class_are_applied(
    values: dict[str, Any],
    expected: dict[str, str],
    make_handler: Callable[..., s3.S3Handler],
    client: Any,
    bucket: str,
    make_delivery: MakeDelivery,
) -> None:
    handler = make_handler(**values)
    await handler.deliver(make_delivery())
    head = await client.head_object(Bucket=bucket, Key=KEY)
    for header, value in expected.items():
        assert value in head[header]


async def test_gzip_sets_content_encoding(
    make_handler: Callable[..., s3.S3Handler], client: Any, bucket: str, make_delivery: MakeDelivery
) -> None:
    handler = make_handler(gzip=True)
    delivery = make_delivery()
    await handler.deliver(delivery)
    response, body = await read(client, bucket, KEY)
    assert response["ContentEncoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == delivery.document


async def test_transcript_is_stored_beside_the_document(
    make_handler: Callable[..., s3.S3Handler],
    client: Any,
    bucket: str,
    kallglot: Any,
    make_delivery: MakeDelivery,
) -> None:
    transcript = {"object": "transcript", "turns": [{"speaker": "agent", "text": "Hello"}]}
    kallglot.transcripts["sess_01HXYZ123456789"] = transcript
    handler = make_handler(include_transcript=True)
    await handler.deliver(make_delivery())
    assert sorted(await keys(client, bucket)) == [KEY, KEY.replace(".json", ".transcript.json")]
    _, body = await read(client, bucket, KEY.replace(".json", ".transcript.json"))
    assert json.loads(body) == transcript


async def test_failed_analysis_uses_the_status_placeholder(
    make_handler: Callable[..., s3.S3Handler],
    client: Any,
    bucket: str,
    make_document: MakeDocument,
    make_delivery: MakeDelivery,
) -> None:
    handler = make_handler(key="{status}/{session_id}.json")
    await handler.deliver(make_delivery(make_document("failed")))
    assert await keys(client, bucket) == ["failed/sess_01HXYZ123456789.json"]


async def test_missing_bucket_is_permanent(
    make_handler: Callable[..., s3.S3Handler], make_delivery: MakeDelivery
) -> None:
    handler = make_handler(bucket="no-such-bucket-here")
    with pytest.raises(PermanentDeliveryError, match="NoSuchBucket"):
        await handler.deliver(make_delivery())
    with pytest.raises(PermanentDeliveryError, match="does not exist"):
        await handler.probe()


async def test_probe_succeeds_on_an_existing_bucket(make_handler: Callable[..., s3.S3Handler]) -> None:
    handler = make_handler()
    await handler.probe()


async def test_unreachable_store_is_transient(
    make_handler: Callable[..., s3.S3Handler], make_delivery: MakeDelivery
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = make_handler(endpoint_url=f"http://127.0.0.1:{port}", timeout_seconds=2)
    with pytest.raises(TransientDeliveryError):
        await handler.deliver(make_delivery())


async def test_created_at_without_zone_counts_as_utc(make_delivery: MakeDelivery) -> None:
    delivery = make_delivery(created_at=datetime(2026, 3, 26, 23, 0))
    assert s3.object_key(s3.DEFAULT_KEY, delivery) == KEY
