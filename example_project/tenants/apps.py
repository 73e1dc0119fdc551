from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "example_project.tenants"
    label = "tenants"
    verbose_name = "Organisations"
