# syntax=docker/dockerfile:1
# bertserve: a gRPC BERT feature server on onnxruntime.
#
#   docker build -t bertserve .                 # CPU image with all-MiniLM-L6-v2 baked in
#   docker run -p 50051:50051 -p 9090:9090 bertserve
#   docker run -v $PWD/models:/models bertserve  # serve your own model repository instead
#
# GPU image: --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg EXTRA=gpu
# (that base needs python3.11+ and pip; run with --gpus all and BERTSERVE_DEVICE=cuda).

ARG PYTHON=python:3.11-slim
ARG BASE=${PYTHON}

# ---- export: torch lives only in this stage ----
FROM ${PYTHON} AS export
# The CPU build of torch; the default index would bring a multi-GB CUDA build the export never uses.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY export ./export
COPY server ./server
COPY client ./client
COPY train ./train
COPY bench ./bench
COPY dataset ./dataset
RUN pip install --no-cache-dir --extra-index-url ${TORCH_INDEX} ".[export]"
ARG VARIANTS=fp32-opt
RUN bertserve export minilm --repo /models --variants ${VARIANTS} --no-progress

# ---- runtime: onnxruntime, tokenizers and grpc; no torch ----
FROM ${BASE} AS runtime
ARG EXTRA=server
ENV PYTHONUNBUFFERED=1 \
    BERTSERVE_REPO=/models \
    BERTSERVE_HOST=0.0.0.0 \
    BERTSERVE_PORT=50051 \
    BERTSERVE_METRICS_PORT=9090 \
    BERTSERVE_METRICS_HOST=0.0.0.0
WORKDIR /src
# the sources as the export stage copied them: the list of folders is written once
COPY --from=export /src ./
RUN pip install --no-cache-dir ".[${EXTRA}]" && rm -rf /src
COPY --from=export /models /models
RUN useradd --system --uid 10001 bertserve
USER bertserve
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bertserve", "health", "--target", "127.0.0.1:50051"]
# SIGTERM drains: in-flight requests finish within the grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bertserve", "serve"]
CMD ["--repo", "/models", "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9090"]
