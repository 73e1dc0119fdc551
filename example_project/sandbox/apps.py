from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "example_project.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox API"
