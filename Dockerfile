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
COPY pyproject.toml README.md ./
COPY voxgate ./voxgate
RUN pip install '.[all]'

USER voxgate
VOLUME ["/data"]
# HTTP API, SIP (UDP+TCP), RTP range
EXPOSE 8080 5060/udp 5060/tcp 20000-20999/udp

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["voxgate"]
CMD ["serve"]
