"""The generic ``webhook`` handler: POSTs the §8 document signed with Standard Webhooks headers.

``webhook-id`` is the delivery id, the same on every retry and replay, so the receiving system
deduplicates on it. 2xx is success; 429 and ``Retry-After`` slow us down; 408, 425 and 5xx are
retried; 410 and other 4xx go to the dead letters with the status in the reason.

``format: cloudevents`` sends the same document as a CloudEvents 1.0 event (``mode: binary`` or
``structured``, see ``handlers._cloudevents``), so a Knative broker or an Argo Events webhook source
takes it directly; the Standard Webhooks signature then covers the HTTP body that is sent.
"""

from __future__ import annotations

import json
from typing import Literal, Self

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from handlers import _cloudevents, _http
from handlers._options import whsec_secret
from receiver.delivery import Delivery, HandlerContext, HandlerOptions
from receiver.signing import sign_standard_webhooks

_WHO = "the endpoint"
_RESERVED = {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host"}


class Options(HandlerOptions):
    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://\S+$")
    secret: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    headers: dict[str, str] = Field(default_factory=dict)
    format: Literal["json", "cloudevents"] = "json"
    mode: _cloudevents.Mode | None = Field(default=None, description="cloudevents only; default binary")
    source: str | None = Field(
        default=None,
        pattern=r"^\S{1,512}$",
        description=f"cloudevents only: the event source (URI-reference), default {_cloudevents.DEFAULT_SOURCE}",
    )

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        return whsec_secret(value)

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(name for name in value if name.lower() in _RESERVED)
        if clash:
            raise ValueError(f"headers may not set {', '.join(clash)}")
        return value

    @model_validator(mode="after")
    def _cloudevents_options(self) -> Self:
        if self.format != "cloudevents":
            given = [name for name in ("mode", "source") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply with format: cloudevents")
        elif any(name.lower().startswith("ce-") for name in self.headers):
            raise ValueError("headers may not set ce-* attributes with format: cloudevents")
        return self


class WebhookHandler:
    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._url = options.url
        self._secret = options.secret
        self._clock = context.clock
        self._cloudevents = options.format == "cloudevents"
        self._mode: _cloudevents.Mode = options.mode or "binary"
        self._source = options.source or _cloudevents.DEFAULT_SOURCE
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout_seconds),
            headers={"User-Agent": context.user_agent, **options.headers},
            follow_redirects=False,
        )

    async def deliver(self, delivery: Delivery) -> None:
        if self._cloudevents:
            headers, body = _cloudevents.encode(delivery, self._source, self._mode)
        else:
            body = json.dumps(delivery.document, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers |= sign_standard_webhooks(
                self._secret.get_secret_value(), delivery.id, int(self._clock()), body
            )
        else:
            headers["webhook-id"] = delivery.id
            headers["webhook-timestamp"] = str(int(self._clock()))
        response = await _http.send(self._http, "POST", self._url, who=_WHO, content=body, headers=headers)
        failure = _http.classify(response, _WHO, self._clock())
        if failure is not None:
            raise failure

    async def probe(self) -> None:
        # A POST would deliver something; a HEAD/OPTIONS tells us at least that the host answers.
        await _http.send(self._http, "OPTIONS", self._url, who=_WHO)

    async def aclose(self) -> None:
        await self._http.aclose()


def build(options: HandlerOptions, context: HandlerContext) -> WebhookHandler:
    assert isinstance(options, Options)
    return WebhookHandler(options, context)
