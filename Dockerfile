# Image for secretbot's own Fly app. It carries flyctl because the bot changes the
# secrets of the apps it manages by running `flyctl secrets import`.
#
# NOTE: this image has not been built yet, because the machine it was written on has no
# Docker engine. `fly deploy` builds it on Fly's remote builder, `docker build .` locally.

# Bookworm is pinned because the entrypoint relies on `setpriv` from bookworm's
# util-linux package.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm


# flyctl is downloaded from its GitHub release while the image is built, never at run time.
FROM ${PYTHON_IMAGE} AS flyctl

# Pinned because the bot parses flyctl's JSON output, whose shape changes between
# releases (`secrets list --json` gained the `status` key in v0.4.6). Raise it after
# running the test suite against the new release.
ARG FLYCTL_VERSION=0.4.87
# SHA-256 of the release tarball for the build platform, copied from the release's
# checksum file. When set, a mismatch fails the build. Pass it with
# `--build-arg FLYCTL_SHA256=...` or under [build.args] in fly.toml.
ARG FLYCTL_SHA256=""

# NOTE: the asset name flyctl_<version>_Linux_<x86_64|arm64>.tar.gz follows earlier
# releases and was not checked against v0.4.87 itself.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    case "$(dpkg --print-architecture)" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=arm64 ;; \
        *) echo "no flyctl release exists for architecture $(dpkg --print-architecture)" >&2; exit 1 ;; \
    esac; \
    url="https://github.com/superfly/flyctl/releases/download/v${FLYCTL_VERSION}/flyctl_${FLYCTL_VERSION}_Linux_${arch}.tar.gz"; \
    curl --fail --silent --show-error --location --retry 3 --output /tmp/flyctl.tar.gz "$url"; \
    if [ -n "$FLYCTL_SHA256" ]; then \
        echo "$FLYCTL_SHA256  /tmp/flyctl.tar.gz" | sha256sum -c -; \
    else \
        echo "FLYCTL_SHA256 is not set; the flyctl download is not checksum-verified" >&2; \
    fi; \
    mkdir /out; \
    tar -xzf /tmp/flyctl.tar.gz -C /out flyctl; \
    FLY_NO_UPDATE_CHECK=1 FLY_CONFIG_DIR=/tmp/flyctl-config /out/flyctl version


FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY runbooks ./runbooks
RUN /opt/venv/bin/pip install .


FROM ${PYTHON_IMAGE}

# SECRETBOT_CONFIG is only a default: fly.toml's [env] or `docker run -e` override it.
# The path stays outside /data because a volume mounted there would hide a file that
# Fly writes or the image bakes in.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SECRETBOT_CONFIG=/etc/secretbot/secretbot.toml

RUN groupadd --system --gid 10001 secretbot \
    && useradd --system --uid 10001 --gid secretbot --create-home --home-dir /home/secretbot \
        --shell /usr/sbin/nologin secretbot \
    && mkdir -p /data /etc/secretbot \
    && chown secretbot:secretbot /data

COPY --from=flyctl /out/flyctl /usr/local/bin/flyctl
COPY --from=build /opt/venv /opt/venv

# The SQLite database lives here (DATABASE_URL in fly.toml names /data/secretbot.db),
# so the bot's default relative database path also lands on the volume.
WORKDIR /data

EXPOSE 8080

# A fresh Fly volume is mounted over /data owned by root, so the entrypoint starts as
# root only to hand the working directory to the secretbot user. It then drops to that
# user with setpriv before the bot starts. A container started with --user skips both steps.
ENTRYPOINT ["/bin/sh", "-c", "\
set -e; \
if [ \"$(id -u)\" = 0 ]; then \
    chown secretbot:secretbot .; \
    export HOME=/home/secretbot; \
    exec setpriv --reuid=secretbot --regid=secretbot --init-groups -- \"$@\"; \
fi; \
exec \"$@\"", "secretbot-entrypoint"]

CMD ["secretbot", "serve"]
