# One image for the server replicas (`sessionstore serve`) and the workers
# (`sessionstore worker`); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sessionstore ./sessionstore
COPY workers ./workers
RUN pip install . && useradd --system --no-create-home sessionstore

USER sessionstore
ENV SESSIONSTORE_SERVER_HOST=0.0.0.0 \
    SESSIONSTORE_SERVER_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["sessionstore", "serve"]
