# syntax=docker/dockerfile:1.7
# rewardserve serving images: the HTTP service and onnxruntime, no training stack (no torch); and the train image,
# which adds it for the jobs that train (`rewardserve retrain`, the CronJob in k8s/components/retrain).
#
#   docker build --target gpu -t rewardserve:gpu .     # CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu
#   docker build --target cpu -t rewardserve:cpu .     # python slim, onnxruntime and OpenVINO (CPU)
#   docker build --target cpu --build-arg MODEL_DIR=runs/my-rm -t rewardserve:my-rm .   # model baked in
#   docker build --target train -t rewardserve:train .   # + torch (CPU) and the exporter: `rewardserve retrain`
#
# Without MODEL_DIR the image expects the exported bundle mounted at /models/reward-model (k8s/ does
# that). Settings are REWARDSERVE_* env vars or `serve` flags: docker run rewardserve:cpu serve --help.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- the project as a wheel (built once, installed by both targets) ----
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rewardmodel/ rewardmodel/
COPY rewardserve/ rewardserve/
COPY service/ service/
COPY training/ training/
COPY export/ export/
COPY feedback/ feedback/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the bundle: baked in when MODEL_DIR names one in the build context, else an empty mount point ----
FROM ${PYTHON_IMAGE} AS model
ARG MODEL_DIR=""
RUN --mount=type=bind,source=.,target=/context \
    mkdir -p /models/reward-model \
 && if [ -n "${MODEL_DIR}" ]; then cp -r "/context/${MODEL_DIR}/." /models/reward-model/; fi

# ---- CPU: python slim + onnxruntime + OpenVINO (serves the static int8 variant) ----
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REWARDSERVE_HOST=0.0.0.0 \
    REWARDSERVE_PORT=8000 \
    REWARDSERVE_MODEL=/models/reward-model \
    REWARDSERVE_HOME=/tmp/rewardserve
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir "$(echo /wheels/rewardserve-*.whl)[serve,postgres]" \
 && groupadd --system --gid 10001 rewardserve \
 && useradd --system --uid 10001 --gid rewardserve --no-create-home --shell /usr/sbin/nologin rewardserve
COPY --from=model /models /models
USER 10001:10001
EXPOSE 8000
# /healthz: the process answers, and the model has not failed to load (readiness is k8s' /readyz probe)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REWARDSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["rewardserve"]
# --backend auto (the default) times the bundle's exported variants on this CPU at start and serves the fastest
CMD ["serve"]

# ---- GPU: CUDA runtime + cuDNN (what onnxruntime-gpu's CUDA provider links against) ----
FROM ${CUDA_IMAGE} AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/rewardserve \
    PATH=/opt/rewardserve/bin:$PATH \
    REWARDSERVE_HOST=0.0.0.0 \
    REWARDSERVE_PORT=8000 \
    REWARDSERVE_MODEL=/models/reward-model \
    REWARDSERVE_HOME=/tmp/rewardserve \
    REWARDSERVE_DEVICE=cuda
# Ubuntu's Python; versions follow the CUDA base image's security updates rather than pins that rot.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "${VIRTUAL_ENV}" \
 && groupadd --system --gid 10001 rewardserve \
 && useradd --system --uid 10001 --gid rewardserve --no-create-home --shell /usr/sbin/nologin rewardserve
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir "$(echo /wheels/rewardserve-*.whl)[serve-gpu,postgres]"
COPY --from=model /models /models
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REWARDSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["rewardserve"]
CMD ["serve", "--variant", "fp16"]

# ---- train: the CPU image plus torch (CPU wheels) and the exporter, for `rewardserve retrain` ----
FROM cpu AS train
USER 0
# the CPU wheel index: the default index's torch pulls several GB of CUDA libraries a CPU job never uses
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
      "$(echo /wheels/rewardserve-*.whl)[export,serve,postgres]"
USER 10001:10001
# one round of the loop; the CronJob passes the flags (see `rewardserve retrain --help`)
CMD ["retrain", "--help"]
