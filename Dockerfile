# syntax=docker/dockerfile:1
# celrec: one image for `celrec serve` and `celrec train`.
#   CPU (default):  docker build -t celrec .
#   CUDA:           docker build -t celrec:gpu \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   CUDA base image (must provide python3.11):
#                   ... --build-arg BASE_IMAGE=<cuda image with python3.11>
# The CUDA torch wheels bundle the CUDA runtime; the driver comes from the host through the
# NVIDIA container toolkit (compose profile "gpu").
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first (largest layer, changes least), from the CPU or CUDA index
COPY pyproject.toml README.md ./
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY celrec ./celrec
COPY schemas ./schemas
COPY trainer ./trainer
COPY service ./service
COPY cel ./cel
COPY cli ./cli
RUN pip install .

FROM ${BASE_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin celrec
COPY --from=build /opt/venv /opt/venv
# The source tree itself goes on PYTHONPATH: it carries non-Python files the installed
# wheel lacks (service/static/dashboard.html).
COPY --chown=root:root celrec /app/celrec
COPY --chown=root:root schemas /app/schemas
COPY --chown=root:root trainer /app/trainer
COPY --chown=root:root service /app/service
COPY --chown=root:root cel /app/cel
COPY --chown=root:root cli /app/cli
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    CELREC_HOST=0.0.0.0 CELREC_TRAINER_METRICS_HOST=0.0.0.0
USER celrec
WORKDIR /home/celrec
EXPOSE 8000 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"
CMD ["celrec", "serve"]
