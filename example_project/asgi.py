"""The example project under an ASGI server, where its async view runs on the event loop:

uvicorn example_project.asgi:application --port 8000
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
application = get_asgi_application()
