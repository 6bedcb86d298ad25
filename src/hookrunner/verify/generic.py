"""Verifiers for senders without a scheme of their own: `hmac`, `token`, `basic`, `none`."""

from __future__ import annotations

import binascii
import hmac as _hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.units import as_written
from hookrunner.verify import crypto
from hookrunner.verify.base import (
    LearnsNothing,
    SecretSource,
    SignedRequest,
    Verified,
    check_options,
    register,
)

DEFAULT_ALGORITHM = "sha256"
DEFAULT_ENCODING = "hex"
DEFAULT_TOKEN_HEADER = "Authorization"
AUTHORIZATION = "Authorization"
REALM = "hookrunner"  # named in the WWW-Authenticate challenge of a refused request


@dataclass(frozen=True)
class HmacVerifier(LearnsNothing):
    secrets: tuple[bytes, ...]
    header: str
    algorithm: str = DEFAULT_ALGORITHM
    encoding: crypto.Encoding = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    tolerance: float = crypto.DEFAULT_TOLERANCE
    timestamp_separator: bytes = b"."  # signed text is "{timestamp}{separator}{body}"
    config_warnings: tuple[str, ...] = ()  # for `check` (see rules.load)
    # Read where `header` is absent: another name the sender's default may have (Grafana).
    also_header: str | None = None

    @property
    def secret_headers(self) -> tuple[str, ...]:
        return (self.header,) if self.also_header is None else (self.header, self.also_header)

    def verify(self, request: SignedRequest) -> Verified:
        if self.also_header is None:
            value = crypto.require_header(request.headers, self.header)
        else:
            value = crypto.first_header(request.headers, (self.header, self.also_header))[1]
        if self.prefix:
            # Case-insensitive: some senders write `SHA256=` where the docs say `sha256=`.
            if not value.lower().startswith(self.prefix.lower()):
                raise VerifyError(f"malformed signature header (it does not start with the "
                                  f"hook's prefix {self.prefix!r})")
            value = value[len(self.prefix):]
        message = request.body
        if self.timestamp_header:
            stamp = crypto.require_header(request.headers, self.timestamp_header)
            crypto.check_window(crypto.parse_unix_timestamp(stamp), request.now, self.tolerance)
            message = crypto.header_bytes(stamp) + self.timestamp_separator + request.body
        crypto.require_signature(
            self.secrets, message, [value], algorithm=self.algorithm, encoding=self.encoding
        )
        return self.learned(request)


@register("hmac")
def hmac(options: Mapping[str, Any], secrets: SecretSource) -> HmacVerifier:
    check_options(
        options,
        ("secret", "header", "algorithm", "encoding", "prefix", "timestamp_header", "tolerance"),
        required=("secret", "header"),
    )
    prefix = options.get("prefix")
    prefix = "" if prefix is None else prefix  # (`prefix: 0` or `false` meant none, unsaid)
    if not isinstance(prefix, str):
        raise ConfigError(f"prefix: expected a string, got {as_written(prefix)} (quote it)",
                          path=("prefix",))
    header, tolerance, warnings = crypto.option_window(options)
    return HmacVerifier(
        secrets=tuple(crypto.option_secrets(options, secrets)),
        header=cast(str, crypto.option_header(options, "header")),
        algorithm=cast(
            str, crypto.option_str(options, "algorithm", DEFAULT_ALGORITHM, crypto.ALGORITHMS)
        ),
        encoding=cast(
            crypto.Encoding,
            crypto.option_str(options, "encoding", DEFAULT_ENCODING, ("hex", "base64")),
        ),
        prefix=prefix,
        timestamp_header=header,
        tolerance=tolerance,
        config_warnings=warnings,
    )


@dataclass(frozen=True)
class TokenVerifier(LearnsNothing):
    """A shared secret sent as is, e.g. `Authorization: Bearer <token>` or `X-Token: <token>`;
    or, from a sender that can only put it in the URL, as the query parameter `query`."""

    secrets: tuple[bytes, ...]
    header: str = DEFAULT_TOKEN_HEADER
    query: str | None = None

    @property
    def secret_headers(self) -> tuple[str, ...]:
        return (self.header,) if self.query is None else ()

    @property
    def secret_query(self) -> tuple[str, ...]:
        return (self.query,) if self.query is not None else ()

    @property
    def challenge(self) -> str | None:
        """RFC 7235 wants a challenge with every 401; one exists only for Authorization."""
        if self.query is not None or self.header.lower() != "authorization":
            return None
        return f'Bearer realm="{REALM}"'

    def verify(self, request: SignedRequest) -> Verified:
        if self.query is not None:
            token = request.query.get(self.query)
            if not token:
                raise VerifyError(f"{'missing' if token is None else 'empty'} query parameter "
                                  f"{self.query}")
            if not crypto.constant_time_in(token.encode(), self.secrets):
                raise VerifyError("token mismatch")
            return self.learned(request)
        value = crypto.require_header(request.headers, self.header)
        scheme, _, rest = value.partition(" ")
        # `Bearer <token>` is accepted in any header; the bare value is tried too, so a token
        # that itself contains a space still works.
        candidates = [value]
        if scheme.lower() == "bearer" and rest.strip():
            candidates.append(rest.strip())
        matched = False
        for candidate in candidates:
            matched |= crypto.constant_time_in(crypto.header_bytes(candidate), self.secrets)
        if not matched:
            raise VerifyError("token mismatch")
        return self.learned(request)


@register("token")
def token(options: Mapping[str, Any], secrets: SecretSource) -> TokenVerifier:
    check_options(options, ("secret", "header", "query"), required=("secret",))
    if "header" in options and "query" in options:
        raise ConfigError("give header or query, not both", path=("query",))
    if options.get("query") == "wait":  # read as a duration before any verifier runs
        raise ConfigError("query: 'wait' is hookrunner's own parameter (?wait=30s); name "
                          "another", path=("query",))
    return TokenVerifier(
        secrets=tuple(crypto.option_secrets(options, secrets)),
        header=cast(str, crypto.option_header(options, "header", DEFAULT_TOKEN_HEADER)),
        query=crypto.option_str(options, "query", None),
    )


@dataclass(frozen=True)
class BasicVerifier(LearnsNothing):
    """HTTP Basic authentication; both parts compared in constant time, always both."""

    username: bytes
    passwords: tuple[bytes, ...]
    secret_headers: tuple[str, ...] = (AUTHORIZATION,)
    challenge: ClassVar[str] = f'Basic realm="{REALM}"'  # with every 401 (RFC 7235, 7617)

    def verify(self, request: SignedRequest) -> Verified:
        value = crypto.require_header(request.headers, AUTHORIZATION)
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            raise VerifyError("expected Basic authorization")
        try:
            decoded = binascii.a2b_base64(encoded.strip().encode("ascii"), strict_mode=True)
        except (ValueError, UnicodeEncodeError):
            raise VerifyError("malformed Basic authorization") from None
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise VerifyError("malformed Basic authorization")
        user_ok = _hmac.compare_digest(user, self.username)
        password_ok = crypto.constant_time_in(password, self.passwords)
        if not (user_ok & password_ok):
            raise VerifyError("credentials mismatch")
        return self.learned(request)


@register("basic")
def basic(options: Mapping[str, Any], secrets: SecretSource) -> BasicVerifier:
    check_options(options, ("username", "password"), required=("username", "password"))
    username = options["username"]
    if not isinstance(username, str) or not username or ":" in username:
        raise ConfigError("username: expected a non-empty string without ':'",
                          path=("username",))
    return BasicVerifier(
        username=username.encode(),
        passwords=tuple(crypto.option_secrets(options, secrets, "password")),
    )


@dataclass(frozen=True)
class NoneVerifier(LearnsNothing):
    """Accepts everything: for trusted networks, with `allow_ips`. `check` warns about it."""

    secret_headers: tuple[str, ...] = ()

    def verify(self, request: SignedRequest) -> Verified:
        return self.learned(request)


@register("none")
def none(options: Mapping[str, Any], secrets: SecretSource) -> NoneVerifier:
    check_options(options or {}, ())
    return NoneVerifier()
