# Production-style image: voxgate with every feature, running as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    VOXGATE_HOST=0.0.0.0 \
    VOXGATE_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 voxgate \
    && mkdir -p /data && chown voxgate:voxgate /data

WORKDIR /app
# Dependencies from the lock first (exact versions, hashes checked), so the layer
# is reused until requirements.lock changes; then voxgate itself, without deps.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY voxgate ./voxgate
RUN pip install --no-deps --no-build-isolation .

USER voxgate
VOLUME ["/data"]
# HTTP API, SIP (UDP+TCP), RTP range
EXPOSE 8080 5060/udp 5060/tcp 20000-20999/udp

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["voxgate"]
CMD ["serve"]
