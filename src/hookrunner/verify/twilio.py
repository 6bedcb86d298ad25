"""Twilio: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + sorted form params)).

Form bodies: every `key + value`, keys sorted, and a repeated key's values sorted, appended to
the URL. JSON bodies: Twilio adds `bodySHA256=<hex sha256 of the body>` to the URL's query and
signs the URL alone. As in Twilio's own validators, the URL is tried with and without the
default port, because proxies disagree about writing `:443`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qs, parse_qsl, urlsplit

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify import crypto
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register

SIGNATURE = "X-Twilio-Signature"
# Signed with a shared key instead of the auth token (Twilio's webhook signature settings):
# `key=<id>,algorithm=HMAC_SHA256` names the HMAC; without it (or without `algorithm=`), SHA-1.
SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}
BODY_HASH_PARAM = "bodySHA256"
DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class TwilioVerifier:
    secrets: tuple[bytes, ...]
    url: str | None = None  # the public URL Twilio posts to, when a proxy rewrites it
    secret_headers: tuple[str, ...] = (SIGNATURE,)
    uses_url: ClassVar[bool] = True  # the accept path builds the request URL only for this

    def verify(self, request: SignedRequest) -> Verified:
        signature = crypto.require_header(request.headers, SIGNATURE)
        url = self.signed_url(request.url)
        try:
            parts = urlsplit(url)
            variants = {url, _without_port(parts), _with_port(parts)}
        except ValueError:
            raise VerifyError("malformed request URL") from None
        body_hash = parse_qs(parts.query, keep_blank_values=True).get(BODY_HASH_PARAM)
        if body_hash is not None:
            expected = hashlib.sha256(request.body).hexdigest().encode()
            if not hmac.compare_digest(expected, crypto.header_bytes(body_hash[0].lower())):
                raise VerifyError("body hash mismatch")
            suffix = ""
        else:
            suffix = _form_suffix(request.body)
        messages = [(variant + suffix).encode("utf-8", "surrogatepass") for variant in variants]
        algorithm = _algorithm(crypto.optional_header(request.headers, SETTINGS))
        if not any(
            crypto.any_signature_matches(
                self.secrets, message, [signature], algorithm=algorithm, encoding="base64"
            )
            for message in messages
        ):
            # The URL is the usual culprit (a proxy's scheme, host or port): name the one
            # checked, without its query or any user:password (either may hold a secret).
            host = parts.hostname or ""
            where = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
            hint = "" if self.url else "; set url: to the URL Twilio posts to"
            raise VerifyError(f"signature mismatch (URL checked: {where}{hint})")
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        return Verified(
            delivery_id=crypto.optional_header(request.headers, "I-Twilio-Idempotency-Token")
        )

    def signed_url(self, request_url: str) -> str:
        if not self.url:
            if not request_url:
                raise VerifyError("request URL unknown")
            return request_url
        # The configured URL replaces scheme, host and path; the query still comes from the
        # request unless the configured URL has its own. Twilio adds bodySHA256 to the URL it
        # was given for a JSON body, so that parameter comes from the request either way.
        _, sep, query = request_url.partition("?")
        if not sep:
            return self.url
        if "?" not in self.url:
            return f"{self.url}?{query}"
        body_hash = parse_qs(query, keep_blank_values=True).get(BODY_HASH_PARAM)
        if body_hash is None or BODY_HASH_PARAM in parse_qs(urlsplit(self.url).query):
            return self.url
        return f"{self.url}&{BODY_HASH_PARAM}={body_hash[-1]}"


def _form_suffix(body: bytes) -> str:
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    values: dict[str, set[str]] = {}
    for key, value in pairs:
        values.setdefault(key, set()).add(value)
    return "".join(key + value for key in sorted(values) for value in sorted(values[key]))


def _without_port(parts: SplitResult) -> str:
    if parts.port is None:
        return parts.geturl()
    return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()


def _with_port(parts: SplitResult) -> str:
    if parts.port is not None or parts.scheme not in DEFAULT_PORTS:
        return parts.geturl()
    return parts._replace(netloc=f"{parts.netloc}:{DEFAULT_PORTS[parts.scheme]}").geturl()


@register("twilio")
def twilio(options: Mapping[str, Any], secrets: SecretSource) -> TwilioVerifier:
    check_options(options, ("secret", "url"), required=("secret",))
    url = crypto.option_str(options, "url")
    if url is not None and not url.startswith(("https://", "http://")):
        raise ConfigError("url: expected an http:// or https:// URL", path=("url",))
    return TwilioVerifier(tuple(crypto.option_secrets(options, secrets)), url)


def _algorithm(settings: str | None) -> str:
    """The HMAC the signature settings header names (as Twilio's own validator reads it)."""
    for part in (settings or "").split(","):
        name, equals, value = part.partition("=")
        if equals and name.strip() == "algorithm" and value.strip():
            named = ALGORITHMS.get(value.strip().upper())
            if named is None:
                raise VerifyError(f"unsupported signature algorithm {value.strip()[:40]!r} in "
                                  f"{SETTINGS} (HMAC_SHA1 or HMAC_SHA256)")
            return named
    return "sha1"
