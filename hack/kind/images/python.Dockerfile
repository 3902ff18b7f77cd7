# The Python base of kubenova's images where python:3.11-slim-bookworm cannot be pulled:
# Debian bookworm's own Python 3.11, with venv and `python` on PATH as in the public image.
ARG BASE=kubenova.local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python-is-python3 ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
