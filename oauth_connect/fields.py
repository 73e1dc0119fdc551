"""``EncryptedTextField``: a text column that holds Fernet ciphertext and reads as plain text.

Rows load with their ciphertext untouched; the value is decrypted the first time the attribute is
read, then cached on the instance. So listing connections (admin, ``refresh_tokens``) costs no
decryption and never fails because a key was removed, and a failure to decrypt can name the row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from . import crypto
from .exceptions import EncryptionKeyError


class Ciphertext(str):
    """A value as stored: encrypted. Saving it back writes it unchanged."""

    def __repr__(self) -> str:
        return "<Ciphertext>"


class _DecryptOnRead(DeferredAttribute):
    # A data descriptor (it has __set__), so every read passes through __get__ and can decrypt.
    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Ciphertext):
            value = self._decrypt(instance, value)
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value

    def _decrypt(self, instance: Any, value: Ciphertext) -> str:
        try:
            return crypto.decrypt(value)
        except crypto.UndecryptableValue as err:
            # Only a Connection is a connection: ClientCredentials has a provider field too.
            is_connection = instance._meta.label == "oauth_connect.Connection"
            remedy = (
                "reconnect this connection to store new tokens"
                if is_connection
                else "enter this secret again in the admin"
            )
            raise EncryptionKeyError(
                f"Can't decrypt {self.field.name} of {instance._meta.verbose_name} "
                f"#{instance.pk}: none of the keys in {crypto.KEYS_SETTING} matches. Put back the "
                f"key it was encrypted with (keep it after the current one), or {remedy}.",
                connection=instance if is_connection else None,
            ) from err


if TYPE_CHECKING:  # django-stubs' fields are generic; Django's can't be subscripted
    _TextField = models.TextField[Any, Any]
else:
    _TextField = models.TextField


class EncryptedTextField(_TextField):
    """Stores ``str`` encrypted with the first key of ``ENCRYPTION_KEYS``; empty stays empty."""

    descriptor_class = _DecryptOnRead

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if not value:
            return value
        return Ciphertext(value)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        # Read the stored value without the descriptor, so a field nobody read is written back
        # as the same ciphertext: no needless decryption, and a row whose key is gone can still
        # be saved (e.g. to change its status).
        if self.attname in model_instance.__dict__:
            return model_instance.__dict__[self.attname]
        return super().pre_save(model_instance, add)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if not value or isinstance(value, Ciphertext):
            return value
        return crypto.encrypt(value)
