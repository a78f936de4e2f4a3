"""The carriers' pure parts: signatures against the published examples, parsing, settings."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from receiver.carriers import dev, telnyx, twilio
from receiver.carriers.pbx import compile_mapping
from receiver.events import InvalidEvent
from receiver.settings import ConfigError, load_settings
from receiver.signing import SignatureError
from receiver.store.carrier_port import LegKind

# Twilio's own example for its request validator (twilio.com/docs/usage/security, and the tests of
# twilio-python / twilio-ruby): auth token 12345.
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]


def test_twilio_signature_matches_twilios_published_example() -> None:
    assert twilio.signature("12345", TWILIO_URL, TWILIO_PARAMS) == "GvWf1cFY/Q7PnoempGyD5oXAezc="
    twilio.verify("GvWf1cFY/Q7PnoempGyD5oXAezc=", "12345", TWILIO_URL, TWILIO_PARAMS)


def test_twilio_signature_matches_twilios_older_published_example() -> None:
    params = [(k, "+14158675309" if k in ("Caller", "From") else v) for k, v in TWILIO_PARAMS]
    twilio.verify("RSOYDt4T1cUTdK1PDd93/VVr8B8=", "12345", TWILIO_URL, params)


@pytest.mark.parametrize(
    ("signed", "requested"),
    [
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", TWILIO_URL),
        (TWILIO_URL, "https://mycompany.com:443/myapp.php?foo=1&bar=2"),
    ],
    ids=["port-added-by-twilio", "port-in-our-url"],
)
def test_twilio_default_port_is_accepted_either_way(signed: str, requested: str) -> None:
    twilio.verify(twilio.signature("12345", signed, TWILIO_PARAMS), "12345", requested, TWILIO_PARAMS)


@pytest.mark.parametrize(
    ("header", "token", "url", "reason"),
    [
        (None, "12345", TWILIO_URL, "missing_signature"),
        ("GvWf1cFY/Q7PnoempGyD5oXAezc=", "54321", TWILIO_URL, "bad_signature"),
        ("GvWf1cFY/Q7PnoempGyD5oXAezc=", "12345", "https://mycompany.com/myapp.php?foo=1", "bad_signature"),
        (
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "bad_signature",
        ),
    ],
    ids=["missing", "wrong-token", "other-query", "other-scheme"],
)
def test_twilio_rejections(header: str | None, token: str, url: str, reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        twilio.verify(header, token, url, TWILIO_PARAMS)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("completed", LegKind.ENDED),
        ("busy", LegKind.SKIPPED),
        ("failed", LegKind.SKIPPED),
        ("no-answer", LegKind.SKIPPED),
        ("canceled", LegKind.SKIPPED),
        ("ringing", LegKind.LIVE),
        ("in-progress", LegKind.LIVE),
        ("something-new", LegKind.LIVE),
    ],
)
def test_twilio_statuses(status: str, kind: LegKind) -> None:
    event = twilio.parse(dev.twilio_params(None, "CA1", status), None, None)
    assert event.kind is kind
    assert event.event_id == f"CA1:{status}:3"


def test_twilio_session_from_the_url_wins_over_the_custom_parameter() -> None:
    params = dev.twilio_params("sess_param", "CA1")
    assert twilio.parse(params, "tok", "sess_url").session_id == "sess_url"
    assert twilio.parse(params, "tok", None).session_id == "sess_param"
    assert twilio.parse(params, "tok", None).event_id == "tok"


def test_twilio_without_a_call_sid_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        twilio.parse({"CallStatus": "completed"}, None, None)


def test_telnyx_signature_round_trip_and_rejections() -> None:
    private = Ed25519PrivateKey.generate()
    body = b'{"data": {}}'
    headers = telnyx.sign(private, 1_700_000_000, body)
    telnyx.verify(headers, body, private.public_key(), tolerance_seconds=300, now=1_700_000_100)
    cases = [
        (headers, b'{"data": {"x": 1}}', 1_700_000_100, "bad_signature"),
        (headers, body, 1_700_000_301, "stale_timestamp"),
        (headers, body, 1_699_999_699, "stale_timestamp"),
        ({**headers, "telnyx-timestamp": "1700000001"}, body, 1_700_000_100, "bad_signature"),
        ({**headers, "telnyx-signature-ed25519": "%%%"}, body, 1_700_000_100, "malformed_signature"),
        ({"telnyx-timestamp": "1700000000"}, body, 1_700_000_100, "missing_signature"),
    ]
    for sent, signed_body, now, reason in cases:
        with pytest.raises(SignatureError) as caught:
            telnyx.verify(sent, signed_body, private.public_key(), tolerance_seconds=300, now=now)
        assert caught.value.reason == reason
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError):
        telnyx.verify(headers, body, other, tolerance_seconds=300, now=1_700_000_100)


def test_telnyx_client_state_carries_the_session() -> None:
    event = telnyx.parse(json.dumps(dev.telnyx_payload("sess_cs1", "v3:x")).encode(), None)
    assert (event.session_id, event.kind, event.carrier_call_id) == ("sess_cs1", LegKind.ENDED, "v3:x")
    garbage = dev.telnyx_payload(None, "v3:y", client_state=base64.b64encode(b"not json").decode())
    assert telnyx.parse(json.dumps(garbage).encode(), None).session_id is None


def test_the_sandbox_key_pair_matches() -> None:
    assert telnyx.public_key(dev.DEV_TELNYX_PUBLIC_KEY) is not None
    assert dev.public_key_of(dev.DEV_TELNYX_PRIVATE_KEY) == dev.DEV_TELNYX_PUBLIC_KEY
    assert len(dev.DEV_TWILIO_AUTH_TOKEN.encode()) >= 16


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"twilio_auth_token": "t0k3nXY"}, "RECEIVER_TWILIO_AUTH_TOKEN"),
        ({"twilio_auth_token": ""}, "RECEIVER_TWILIO_AUTH_TOKEN"),
        ({"telnyx_public_key": "bm90IGEga2V5"}, "RECEIVER_TELNYX_PUBLIC_KEY"),
        ({"public_url": "calls.example.com"}, "RECEIVER_PUBLIC_URL"),
        ({"call_settle_seconds": -1}, "RECEIVER_CALL_SETTLE_SECONDS"),
        ({"call_ended_mapping": "{from: caller}"}, "RECEIVER_CALL_ENDED_MAPPING"),
        ({"call_ended_mapping": "{session_id: 'a[['}"}, "RECEIVER_CALL_ENDED_MAPPING"),
        ({"inbound_bearer_token": "tiny"}, "RECEIVER_INBOUND_BEARER_TOKEN"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_telephony_settings_stop_start_up_naming_the_setting(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message
    assert "t0k3nXY" not in message
    assert "tiny" not in message


def test_telephony_settings_are_read() -> None:
    settings = load_settings(
        trigger="session.provider.disconnected",
        call_ended_mapping="session_id: body.session\nfrom: caller",
        public_url="https://calls.example.com/",
    )
    assert settings.call_ended_mapping == {"session_id": "body.session", "from": "caller"}
    assert settings.public_url == "https://calls.example.com"
    assert compile_mapping(settings.call_ended_mapping)["from"].search({"caller": "+1"}) == "+1"


_text = st.text(max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(_text, _text, max_size=12), st.none() | _text)
def test_twilio_parse_accepts_or_refuses_any_form_but_never_crashes(
    params: dict[str, str], token: str | None
) -> None:
    try:
        event = twilio.parse(params, token, None)
    except InvalidEvent:
        return
    assert event.carrier_call_id == params["CallSid"]
    twilio.verify(twilio.signature("k" * 16, "https://x/events/twilio", params.items()), "k" * 16,
                  "https://x/events/twilio", list(params.items()))  # fmt: skip


@given(_json, st.sampled_from(["call.hangup", "call.answered"]), _json)
def test_telnyx_parse_accepts_or_refuses_any_json_but_never_crashes(
    payload: object, kind: str, state: object
) -> None:
    body = {"data": {"id": "e1", "event_type": kind, "payload": payload}}
    if isinstance(payload, dict):
        payload.setdefault("call_control_id", "v3:x")
        payload["client_state"] = state
    try:
        event = telnyx.parse(json.dumps(body).encode(), None)
    except InvalidEvent:
        return
    assert event.kind is (LegKind.ENDED if kind == "call.hangup" else LegKind.LIVE)
    json.dumps(event.call)  # what is stored stays JSON
