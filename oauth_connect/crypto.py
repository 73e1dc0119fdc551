"""Fernet encryption of stored secrets with key rotation.

``OAUTH_CONNECT["ENCRYPTION_KEYS"]`` lists Fernet keys: the first encrypts, every one decrypts.
To rotate: put a new key first, keep the old one after it, run ``manage.py
rotate_encryption_keys``, then remove the old key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from . import conf
from .exceptions import ConfigurationError

KEYS_SETTING = 'OAUTH_CONNECT["ENCRYPTION_KEYS"]'
# The command every "make a key" message shows.
KEYGEN = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class UndecryptableValue(Exception):
    """No configured key decrypts this value. Callers turn it into an ``EncryptionKeyError`` that
    names the row it came from."""


@lru_cache(maxsize=8)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    # Keyed by the keys themselves, so override_settings with other keys gets another MultiFernet.
    if not keys:
        raise ConfigurationError(f"{KEYS_SETTING} is empty: add a key made with `{KEYGEN}`.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as err:
        raise ConfigurationError(
            f"{KEYS_SETTING} holds a value that is not a Fernet key (32 url-safe base64 bytes)."
        ) from err


def _fernet() -> MultiFernet:
    return _fernet_for(tuple(conf.encryption_keys()))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as err:
        raise UndecryptableValue from err


def reencrypt(ciphertext: str) -> str:
    """The same secret encrypted with the first key (``MultiFernet.rotate``)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as err:
        raise UndecryptableValue from err


def is_encrypted_with_primary_key(ciphertext: str) -> bool:
    keys = conf.encryption_keys()
    try:
        Fernet(keys[0]).decrypt(ciphertext.encode())
    except (InvalidToken, IndexError):
        return False
    return True
