#!/bin/sh
# Secrets from files: for every UPCOACH_<NAME>_FILE in the environment, UPCOACH_<NAME> is set to that file's
# content (compose and Kubernetes mount secrets as files; values never sit in the environment of the definition).
set -eu
for var in $(env | sed -n 's/^\(UPCOACH_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    file=$(printenv "${var}_FILE")
    [ -r "$file" ] || { echo "entrypoint: ${var}_FILE=$file is not readable" >&2; exit 1; }
    value=$(cat "$file")
    export "$var=$value"
    unset "${var}_FILE"
done
exec upcoach "$@"
