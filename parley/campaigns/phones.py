"""Phone numbers for campaigns and the do-not-call list: E.164 through ``phonenumbers``, and a number's time zone.

One spelling per number (``+442071838750``), so the unique (campaign, phone) key and the do-not-call lookup see
``020 7183 8750`` (with region GB) and ``+44 20 7183 8750`` as the same number.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import timezone as number_timezones

from parley.campaigns.schedule import is_timezone

MAX_INPUT = 64


class PhoneError(ValueError):
    """The text is not a valid phone number (the message says why, for the per-row report)."""


def region_of(number: str | None) -> str | None:
    """The region (``US``, ``GB``) of a number written in E.164, e.g. the campaign's caller id; None if unknown."""
    if not number:
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None


def valid_region(region: str) -> bool:
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def parse(text: str, region: str | None = None) -> phonenumbers.PhoneNumber:
    raw = text.strip()
    if not raw:
        raise PhoneError("no phone number")
    if len(raw) > MAX_INPUT:
        raise PhoneError("too long for a phone number")
    if not raw.startswith("+") and region is None:
        raise PhoneError("no country: write the number with + and its country code, or give a region")
    try:
        number = phonenumbers.parse(raw, region.upper() if region else None)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("not a valid number for its country")
    return number


def to_e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(text: str, region: str | None = None) -> str:
    """E.164 for ``text``; ``PhoneError`` if it is not a valid number (without ``+``, ``region`` is its country)."""
    return to_e164(parse(text, region))


def timezone_of(number: phonenumbers.PhoneNumber, default: str) -> str:
    """The number's IANA zone when its prefix names one; with several (a country over many zones), ``default``
    if it is one of them, else the first; ``default`` when the prefix names none."""
    zones = [z for z in number_timezones.time_zones_for_number(number) if is_timezone(z)]
    if not zones:
        return default
    return default if default in zones else zones[0]
