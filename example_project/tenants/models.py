from django.conf import settings
from django.db import models


class Organisation(models.Model):
    """The example product's tenant: connections belong to an organisation, not a person."""

    name = models.CharField(max_length=200)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="organisations")

    def __str__(self) -> str:
        return self.name
