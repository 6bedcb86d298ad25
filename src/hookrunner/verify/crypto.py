"""Shared building blocks: HMAC, signature decoding, header and timestamp checks.

Signatures are decoded to raw bytes before comparing, so a hex signature in upper case still
matches, and `hmac.compare_digest` never sees a non-ASCII str (which would raise TypeError).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.units import parse_duration
from hookrunner.verify.base import Headers, SecretSource, header_text

DEFAULT_TOLERANCE = 300.0  # seconds either side of `now` a signed timestamp may be
MIN_TOLERANCE = 1.0  # seconds: senders' timestamps count whole seconds
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header's name (RFC 9110 5.6.2)
ALGORITHMS = ("sha1", "sha256", "sha512")
Encoding = Literal["hex", "base64"]

_HEX = re.compile(r"[0-9a-fA-F]+")
_UNIX_SECONDS = re.compile(r"^\s*\d{1,12}(?:\.\d{1,9})?\s*$")


# hashlib lets go of the GIL while it hashes more than 2 KiB in one call (CPython's
# HASHLIB_GIL_MINSIZE). On the event loop, getting it back means waiting for the thread that
# took it (the store's writer): ~30 us for a 5 KB body, measured, against ~1 us to hash it in
# pieces that keep it. The keyed inner and outer states are made once per secret and copied.
_GIL_KEPT = 2047


def sign(secret: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    inner, outer = _keyed(secret, algorithm)
    mac = inner.copy()
    if len(message) <= _GIL_KEPT:
        mac.update(message)
    else:
        view = memoryview(message)
        for start in range(0, len(message), _GIL_KEPT):
            mac.update(view[start:start + _GIL_KEPT])
    final = outer.copy()
    final.update(mac.digest())
    digest: bytes = final.digest()
    return digest


@functools.lru_cache(maxsize=256)
def _keyed(secret: bytes, algorithm: str) -> tuple[Any, Any]:
    """HMAC's keyed inner and outer hash states (RFC 2104), copied for each message: hmac's
    own HMAC over hashlib objects does the same through four Python methods a message."""
    digest: Callable[[bytes], Any] = getattr(hashlib, algorithm)
    block = digest(b"").block_size
    key = digest(secret).digest() if len(secret) > block else secret
    key = key.ljust(block, b"\0")
    return (digest(bytes(b ^ 0x36 for b in key)), digest(bytes(b ^ 0x5C for b in key)))


def decode_signature(value: str, encoding: Encoding) -> bytes | None:
    """Raw digest bytes of a hex or base64 signature; None if it is not valid in that form."""
    value = value.strip()
    try:
        if encoding == "hex":
            if not _HEX.fullmatch(value) or len(value) % 2:
                return None
            return bytes.fromhex(value)
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError):
        return None


def any_signature_matches(
    secrets: Sequence[bytes],
    message: bytes,
    candidates: Iterable[str],
    *,
    algorithm: str = "sha256",
    encoding: Encoding = "hex",
) -> bool:
    """True if any candidate signature equals HMAC(secret, message) for any secret."""
    decoded = [d for d in (decode_signature(c, encoding) for c in candidates) if d is not None]
    expected = [sign(secret, message, algorithm) for secret in secrets]
    # No early return: the work done does not depend on which secret or candidate matched.
    matched = False
    for exp in expected:
        for got in decoded:
            matched |= hmac.compare_digest(exp, got)
    return matched


def require_signature(
    secrets: Sequence[bytes],
    message: bytes,
    candidates: Iterable[str],
    *,
    algorithm: str = "sha256",
    encoding: Encoding = "hex",
) -> None:
    if not any_signature_matches(
        secrets, message, candidates, algorithm=algorithm, encoding=encoding
    ):
        raise VerifyError("signature mismatch")


def constant_time_in(value: bytes, secrets: Sequence[bytes]) -> bool:
    """True if `value` equals any of `secrets` (for shared tokens rather than signatures)."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(value, secret)
    return matched


def header_bytes(value: str) -> bytes:
    """The header value as bytes on the wire (servers decode headers as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def require_header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise VerifyError(f"{'missing' if value is None else 'empty'} header {name}")
    return value.strip()


def first_header(headers: Headers, names: Sequence[str]) -> tuple[str, str]:
    """(name, value) of the first of `names` present; VerifyError if none is, or if the first
    present is empty: a later name cannot stand in for it (GitHub's legacy SHA-1 header is
    checked only when the SHA-256 one is absent), as a second copy of a header cannot."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            if not value.strip():
                raise VerifyError(f"empty header {name}")
            return name, value.strip()
    raise VerifyError(f"missing header {names[0]}")


def optional_header(headers: Headers, *names: str) -> str | None:
    """A sender's id or event type as text: `dé-1` as sent, not its bytes read as latin-1
    (stored and logged garbled, and unlike the same header read by a `dedup:` template)."""
    for name in names:
        value = headers.get(name)
        if value is not None and value.strip():
            return header_text(value.strip())
    return None


def split_prefixed(value: str, allowed: Sequence[str]) -> tuple[str, str]:
    """`sha256=abc` -> ("sha256", "abc"); VerifyError for an algorithm not in `allowed`."""
    algorithm, sep, signature = value.partition("=")
    algorithm = algorithm.strip().lower()
    if not sep or algorithm not in allowed:
        raise VerifyError(f"malformed signature header (expected {' or '.join(allowed)}=<signature>)")
    return algorithm, signature


def parse_unix_timestamp(value: str) -> float:
    """Seconds since the epoch from a decimal string; VerifyError if it is not one."""
    if not _UNIX_SECONDS.match(value):
        digits = value.strip()
        raise VerifyError("invalid timestamp: Unix seconds expected" + (
            " (this looks like milliseconds)" if digits.isdigit() and len(digits) == 13 else
            " (this looks like a date)" if re.match(r"\d{4}-\d\d-\d\d", digits) else ""))
    return float(value)


def parse_iso_timestamp(value: str) -> float:
    """Seconds since the epoch from an ISO 8601 time with an offset (`2021-01-01T00:00:00Z`)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise VerifyError("invalid timestamp") from None
    if parsed.tzinfo is None:
        raise VerifyError("invalid timestamp")
    return parsed.timestamp()


def check_window(timestamp: float, now: float, tolerance: float) -> None:
    """Reject a timestamp too far in the past (replay) or the future (clock skew, pre-signing)."""
    if abs(now - timestamp) > tolerance:
        raise VerifyError("timestamp outside tolerance")


# Option parsing, shared by the factories. Errors carry `path` so the loader finds the line.


def option_secrets(
    options: Mapping[str, Any], source: SecretSource, key: str = "secret"
) -> list[bytes]:
    if key not in options:
        raise ConfigError(f"missing required option {key!r}", path=(key,))
    secrets = source(options[key], key)
    if not secrets:
        raise ConfigError(f"{key}: no secret given", path=(key,))
    return secrets


def option_tolerance(options: Mapping[str, Any], default: float = DEFAULT_TOLERANCE) -> float:
    if "tolerance" not in options:
        return default
    try:
        tolerance = parse_duration(options["tolerance"])
    except ValueError as exc:
        raise ConfigError(f"tolerance: {exc}", path=("tolerance",)) from None
    if tolerance < MIN_TOLERANCE:
        # `100ms` loaded, then refused 9 of 10 genuine deliveries: a stamp signed at 12:00:00
        # may have been taken at 12:00:00.999.
        raise ConfigError("tolerance: must be at least 1s (senders' timestamps count whole "
                          "seconds, so a shorter window refuses most genuine deliveries)",
                          path=("tolerance",))
    return tolerance


WINDOW_WITHOUT_TIMESTAMP = ("tolerance has no effect without timestamp_header: nothing "
                            "refuses a replayed request (name the header with the sender's "
                            "timestamp)")


def option_window(options: Mapping[str, Any]) -> tuple[str | None, float, tuple[str, ...]]:
    """`timestamp_header` and `tolerance` of a scheme where the timestamp is optional, and
    a warning where a tolerance alone would look like replay protection while nothing checks
    it (a warning: configurations written before it was noticed still load)."""
    header = option_header(options, "timestamp_header")
    warnings = (WINDOW_WITHOUT_TIMESTAMP,) if header is None and "tolerance" in options else ()
    return header, option_tolerance(options), warnings


def option_header(options: Mapping[str, Any], key: str, default: str | None = None
                  ) -> str | None:
    """A header's name, as HTTP allows one (a token: `X Sig` or `Xé` could never arrive, a
    request with one is a 400, and the hook answered 401 `missing header` to every delivery)."""
    name = option_str(options, key, default)
    if name is not None and not _TOKEN.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a header name (letters, digits and "
                          "!#$%&'*+-.^_`|~, no spaces or colons)", path=(key,))
    return name



def option_str(
    options: Mapping[str, Any], key: str, default: str | None = None, choices: Sequence[str] = ()
) -> str | None:
    if key not in options or options[key] is None:
        return default
    value = options[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string", path=(key,))
    if choices and value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}",
                          path=(key,))
    return value.strip() if not choices else value
