"""Phone numbers as the CRM handlers match them: parsed by ``phonenumbers`` against a default region.

A number written without ``+country`` is read in the handler's ``default_region`` (an ISO 3166
two-letter code, validated when the options are loaded). Anything ``phonenumbers`` cannot parse as
a *possible* number counts as no number, so a CRM is never searched for garbage.
"""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from pydantic import AfterValidator, Field


def check_region(value: str) -> str:
    """``de`` -> ``DE``; ValueError for a region ``phonenumbers`` does not know."""
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {value!r}; use a two-letter ISO country code such as US or DE")
    return region


# The ``default_region`` option shared by the CRM handlers.
Region = Annotated[
    str,
    AfterValidator(check_region),
    Field(description="region for phone numbers without +country code"),
]


def parse(raw: str | None, region: str) -> phonenumbers.PhoneNumber | None:
    """The number ``raw`` names when it is a possible number, else ``None``."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def e164(raw: str | None, region: str) -> str | None:
    """``(415) 555-0100`` in US -> ``+14155550100``; ``None`` when ``raw`` is not a possible number."""
    number = parse(raw, region)
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def e164_and_national(raw: str | None, region: str) -> list[str]:
    """The E.164 form and the national significant digits (for fields stored as typed)."""
    number = parse(raw, region)
    if number is None:
        return []
    full = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.national_significant_number(number)
    return [full, national] if national and national != full else [full]
