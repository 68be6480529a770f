# One image for the API (ml-api), the Celery worker and beat; compose picks the command.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/ requirements/
# The CPU build of torch keeps the image small; a GPU host overrides this index.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/base.txt
COPY . .
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v0
RUN useradd --create-home --uid 1000 investml && mkdir -p /app/var /app/ml_models /app/ml_logs /app/ml_registry \
    && chown -R investml /app/var /app/ml_models /app/ml_logs /app/ml_registry
USER investml
EXPOSE 8001
CMD ["python", "-m", "investml.serve"]
