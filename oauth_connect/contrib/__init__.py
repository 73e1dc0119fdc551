"""Optional integrations with other libraries. Each module imports its library, so import only
the ones whose extra you installed (``pip install oauth_connect[celery]`` for ``celery``)."""
