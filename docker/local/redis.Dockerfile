# Debian bookworm's redis-server (7.0), for machines that cannot pull the official Redis image that
# docker-compose.yml names: scripts/container_smoke.sh builds it and sets BINLLM_REDIS_IMAGE. Like the official
# image it runs as the redis user (uid 999) with its data in /data and answers `redis-cli ping`.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# The user first, with the official image's ids, so the package's postinst reuses it.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data /usr/local/etc/redis \
    && chown redis:redis /data
VOLUME /data
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
