"""Signature schemes: a table of accepted and refused headers, with an injected clock."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.signing import (
    SignatureError,
    sign_kallglot,
    sign_standard_webhooks,
    standard_webhooks_key,
    standard_webhooks_signature,
    verify_kallglot,
    verify_standard_webhooks,
)

NOW = 1_711_454_400
BODY = b'{"id":"evt_1","type":"session.ended","data":{"id":"sess_1"}}'
SECRET = "kg_secret_current"
OLD = "kg_secret_previous"


def test_kallglot_signature_matches_the_documented_construction() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_kallglot(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize(
    ("header", "secrets", "now", "reason"),
    [
        (None, [SECRET], NOW, "missing_signature"),
        ("", [SECRET], NOW, "missing_signature"),
        ("nonsense", [SECRET], NOW, "malformed_signature"),
        (f"t={NOW}", [SECRET], NOW, "malformed_signature"),
        ("v1=abcd", [SECRET], NOW, "malformed_signature"),
        (f"t=x{NOW},v1=ab", [SECRET], NOW, "malformed_signature"),
        (sign_kallglot(SECRET, NOW, BODY), ["other"], NOW, "bad_signature"),
        (sign_kallglot(SECRET, NOW, BODY), [SECRET], NOW + 301, "stale_signature"),
        (sign_kallglot(SECRET, NOW, BODY), [SECRET], NOW - 301, "stale_signature"),
        (sign_kallglot(SECRET, NOW, BODY + b" "), [SECRET], NOW, "bad_signature"),
        (f"t={NOW},v1=\xe9abc", [SECRET], NOW, "malformed_signature"),
        (f"t={NOW},v1=" + "\xe9" * 64, [SECRET], NOW, "malformed_signature"),
        (f"t={NOW},v1=" + "\udc00" * 64, [SECRET], NOW, "malformed_signature"),
        (f"t={NOW}".encode() + b",v1=\xe9abc", [SECRET], NOW, "malformed_signature"),
        (f"t={'9' * 4000},v1=" + "a" * 64, [SECRET], NOW, "malformed_signature"),
        (f"t=1_{NOW},v1=" + "a" * 64, [SECRET], NOW, "malformed_signature"),
    ],
    ids=[
        "none",
        "empty",
        "garbage",
        "no-v1",
        "no-t",
        "bad-t",
        "wrong-secret",
        "old",
        "future",
        "altered",
        "latin1-candidate",
        "latin1-64",
        "surrogate-candidate",
        "raw-bytes",
        "huge-t",
        "underscore-t",
    ],
)
def test_kallglot_refusals(header: str | bytes | None, secrets: list[str], now: int, reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_kallglot(header, BODY, secrets, tolerance_seconds=300, now=now)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "header",
    [
        sign_kallglot(SECRET, NOW, BODY),
        sign_kallglot(OLD, NOW, BODY),
        sign_kallglot(SECRET, NOW, BODY).upper().replace("T=", "t=").replace("V1=", "v1="),
        f"t={NOW},v1=deadbeef,v1={sign_kallglot(SECRET, NOW, BODY).split('v1=')[1]}",
        f" t={NOW} , v1={sign_kallglot(SECRET, NOW, BODY).split('v1=')[1]} ",
    ],
    ids=["current-secret", "rotated-secret", "uppercase-hex", "several-v1", "spaces"],
)
def test_kallglot_acceptances(header: str) -> None:
    assert verify_kallglot(header, BODY, [SECRET, OLD], tolerance_seconds=300, now=NOW + 299) == NOW


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=2**40))
def test_kallglot_round_trip(body: bytes, timestamp: int) -> None:
    header = sign_kallglot(SECRET, timestamp, body)
    assert verify_kallglot(header, body, [SECRET], tolerance_seconds=1, now=timestamp) == timestamp


WHSEC = "whsec_" + base64.b64encode(b"an inbound secret of 24b").decode()


def test_standard_webhooks_round_trip_and_rotation() -> None:
    headers = sign_standard_webhooks(WHSEC, "msg_1", NOW, BODY)
    other = "whsec_" + base64.b64encode(b"another").decode()
    assert verify_standard_webhooks(headers, BODY, [other, WHSEC], tolerance_seconds=300, now=NOW) == "msg_1"


def test_standard_webhooks_matches_the_spec_example() -> None:
    # The example of the Standard Webhooks specification (its README, "Signature scheme").
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = sign_standard_webhooks(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "missing_signature"),
        ({"webhook-timestamp": "soon"}, "malformed_signature"),
        ({"webhook-timestamp": str(NOW - 1000)}, "stale_signature"),
        ({"webhook-signature": "v2,abc"}, "malformed_signature"),
        ({"webhook-signature": "v1,AAAA"}, "malformed_signature"),
        ({"webhook-signature": "v1," + base64.b64encode(bytes(32)).decode()}, "bad_signature"),
        ({"webhook-signature": "v1,\xe9\xe9"}, "malformed_signature"),
        ({"webhook-signature": "v1,\udc00" + "A" * 43}, "malformed_signature"),
        ({"webhook-timestamp": "9" * 400}, "malformed_signature"),
        ({"webhook-timestamp": "\u0661\u0662"}, "malformed_signature"),
        ({"webhook-id": "msg_2"}, "bad_signature"),
    ],
)
def test_standard_webhooks_refusals(change: dict[str, str], reason: str) -> None:
    headers = sign_standard_webhooks(WHSEC, "msg_1", NOW, BODY) | change
    with pytest.raises(SignatureError) as caught:
        verify_standard_webhooks(headers, BODY, [WHSEC], tolerance_seconds=300, now=NOW)
    assert caught.value.reason == reason


def test_a_malformed_whsec_secret_is_a_value_error_without_the_secret() -> None:
    with pytest.raises(ValueError, match="whsec_") as caught:
        standard_webhooks_key("whsec_not base64!")
    assert "not base64!" not in str(caught.value)


_HEADER_TEXT = st.one_of(st.text(max_size=200), st.binary(max_size=200), st.none())


@given(_HEADER_TEXT)
def test_the_kallglot_parser_takes_any_header_without_raising_anything_else(
    header: str | bytes | None,
) -> None:
    with pytest.raises(SignatureError):
        verify_kallglot(header, BODY, [SECRET], tolerance_seconds=300, now=NOW)


@given(_HEADER_TEXT, _HEADER_TEXT, _HEADER_TEXT)
def test_the_standard_webhooks_parser_takes_any_headers_without_raising_anything_else(
    msg_id: str | bytes | None, timestamp: str | bytes | None, signature: str | bytes | None
) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify_standard_webhooks(
            {k: v for k, v in headers.items() if v is not None}, BODY, [WHSEC], tolerance_seconds=300, now=NOW
        )


@given(st.text(max_size=40).filter(lambda s: s.strip() == s and " " not in s and s))
def test_any_webhook_id_round_trips(msg_id: str) -> None:
    headers = sign_standard_webhooks(WHSEC, "x", NOW, BODY) | {"webhook-id": msg_id}
    signature = standard_webhooks_signature(standard_webhooks_key(WHSEC), msg_id, NOW, BODY)
    headers["webhook-signature"] = f"v1,{signature}"
    assert verify_standard_webhooks(headers, BODY, [WHSEC], tolerance_seconds=300, now=NOW) == msg_id
