# streamsite: build the virtualenv in one stage, run from a slim image as a non-root user.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/base.txt /tmp/requirements/base.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/base.txt

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=streamsite.settings
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The application's files belong to root and are read-only to the app user: a compromised
# process cannot rewrite its own code or static files.
COPY . /app
# collectstatic only reads settings: DEBUG=true lets it run without a real SECRET_KEY,
# which is supplied at run time and never stored in the image.
RUN DEBUG=true python manage.py collectstatic --no-input -v0 \
    && chmod -R a-w,a+rX /app
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/app/docker-entrypoint.sh"]
# uvicorn with uvloop, httptools and websockets (uvicorn[standard]): the fastest of the servers
# measured for live delivery and ingest (docs/benchmarks.md, section j). Forwarded headers are
# applied only for TRUSTED_PROXIES (streamsite/server/guards.py), so uvicorn's own are off. On
# SIGTERM every live stream is ended at once; the graceful timeout only bounds the rest.
# --http: httptools with the limits it lacks (header size and count, header, body and
# keep-alive timeouts: streamsite/server/http.py, docs/deployment.md).
CMD ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "--backlog", "4096", "--no-proxy-headers", \
     "--http", "streamsite.server.http:BoundedHttpToolsProtocol", \
     "--timeout-graceful-shutdown", "10", "streamsite.asgi:application"]
