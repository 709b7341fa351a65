#!/bin/sh
# The official image's entrypoint runs the scripts in /docker-entrypoint.d/ first; this stand-in has none.
set -e
exec "$@"
