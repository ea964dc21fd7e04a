"""Message signatures: HMAC-SHA256 with a key derived from ``SECRET_KEY``.

The key is derived once through Django's ``salted_hmac`` (salt
``"djtasks.message"``), and every key in ``SECRET_KEY_FALLBACKS`` still
verifies, so rotating ``SECRET_KEY`` as Django documents keeps queued
messages valid. A signed body is ``<JSON>:<base64url signature>``, the
format of Django's ``Signer``. A worker dead-letters a message whose
signature is missing or wrong and never runs it (docs/security.md).
"""

from __future__ import annotations

import binascii
import hmac
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.crypto import salted_hmac

from .exceptions import MessageError

SALT = "djtasks.message"
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class MessageSigner:
    """Signs with ``secret``; verifies with it and each of ``fallbacks``."""

    def __init__(self, secret: str | bytes, fallbacks: list[str | bytes]) -> None:
        # salted_hmac(SALT, b"", key) holds the derived key; copy() + update()
        # then equals salted_hmac(SALT, payload, key) without re-deriving it.
        # The OpenSSL object inside hmac.HMAC (where there is one) has the
        # same copy/update/digest, without the Python wrapper around each.
        self._keys: list[Any] = [
            getattr(mac, "_hmac", None) or mac
            for mac in (salted_hmac(SALT, b"", key, algorithm="sha256")
                        for key in (secret, *fallbacks))
        ]

    def _signature(self, key: Any, payload: bytes) -> bytes:
        mac = key.copy()
        mac.update(payload)
        # Django's b64_encode (URL-safe base64, "=" stripped) without its wrappers.
        return binascii.b2a_base64(mac.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")

    def sign(self, payload: bytes) -> bytes:
        """``payload`` with its signature appended after a colon."""
        return payload + b":" + self._signature(self._keys[0], payload)

    def unsign(self, body: bytes) -> bytes:
        """The payload of a signed body; ``MessageError`` if the signature is wrong."""
        payload, colon, signature = body.rpartition(b":")
        if not colon or not signature:
            raise MessageError("the message is not signed; djtasks runs only messages "
                               "signed with this project's SECRET_KEY")
        for key in self._keys:
            if hmac.compare_digest(self._signature(key, payload), signature):
                return payload
        raise MessageError("the message signature does not match SECRET_KEY or any of "
                           "SECRET_KEY_FALLBACKS: it was altered, or sent by another "
                           "project using the same Redis database and DJTASKS['KEY_PREFIX'] "
                           "(or by this project with a different SECRET_KEY); each project "
                           "needs its own KEY_PREFIX")


_signer: MessageSigner | None = None


def get_signer() -> MessageSigner:
    """The signer for the current ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``."""
    global _signer
    if _signer is None:
        _signer = MessageSigner(settings.SECRET_KEY,
                                list(getattr(settings, "SECRET_KEY_FALLBACKS", [])))
    return _signer


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _signer
    if setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _signer = None


setting_changed.connect(_reset, dispatch_uid="djtasks.signing")
