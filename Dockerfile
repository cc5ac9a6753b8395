# The one image every cluster config runs (cluster/*.yaml, cluster/kuberay/*.yaml): Ray 2.60, PyTorch with
# CUDA and this project, as the non-root user `ray`. Build and push it from the repository root:
#
#   make image IMAGE=ghcr.io/ray-dl-pipeline/dl-pipeline:0.1.0      (docker build + docker push)
#
# If you push to a registry of your own, replace that tag in cluster/ (see cluster/README.md).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# CUDA wheels of PyTorch, installed once here so that no node downloads them at boot.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
# Dependencies first (a layer that survives code changes), then the code.
COPY --chown=ray:users pyproject.toml README.md ./
RUN mkdir pipeline && touch pipeline/__init__.py && python -m pip install . && python -m pip uninstall -y ray-dl-pipeline
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users cluster ./cluster
RUN python -m pip install --no-deps -e . && python -c "import pipeline, ray, torch; print('pipeline', pipeline.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"

# The jobs (`python jobs/pipeline.py ...`) and Serve (`pipeline.serve.app:app_builder`) run from here.
ENV PYTHONPATH=/app
