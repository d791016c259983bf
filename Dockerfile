# Production image: one image for web (ASGI), worker, beat and flower.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=openspark.settings.production
# prometheus_client's multiprocess mode: the processes of one container (uvicorn --workers,
# a worker's pool) share their metrics through this folder (docs/operations.md, "Metrics").
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/openspark-metrics
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
# The CPU build of torch keeps the image small (the local embedder is optional in production).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY . .
# collectstatic loads the production settings but contacts nothing: their required variables
# get placeholders for this one command only (none of them ends up in the image).
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost REDIS_URL=redis://localhost:6379/0 \
    DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 EMAIL_URL=consolemail:// \
    python manage.py collectstatic --noinput
# The local embedder's int8 model, made from the shipped weights at build time (~30 s) rather
# than by the first container that needs it (a no-op where the CPU picks bf16 or fp32).
RUN SECRET_KEY=build-only ALLOWED_HOSTS=localhost REDIS_URL=redis://localhost:6379/0 \
    DATABASE_URL=sqlite:////tmp/build.sqlite3 EMAIL_URL=consolemail:// \
    python manage.py build_local_model
EXPOSE 8000
CMD ["uvicorn", "openspark.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--ws", "websockets"]
