#!/bin/sh
# Writes the compose stack's secret files into deploy/secrets/ (mode 0600, never committed). Existing files are
# kept, so running it again never changes a key that encrypted data depends on.
set -eu
dir=$(dirname "$0")/secrets
mkdir -p "$dir"
umask 077
new() { [ -s "$dir/$1" ] || { printf '%s' "$2" > "$dir/$1"; echo "wrote $dir/$1"; }; }
rand() { python3 -c "import secrets; print(secrets.token_hex($1), end='')"; }
new postgres_password "$(rand 24)"
new database_url "postgresql://upcoach:$(cat "$dir/postgres_password")@postgres:5432/upcoach"
new audit_key "$(rand 32)"
new model_key "$(rand 32)"
new grafana_admin_password "$(rand 16)"
# Prometheus scrapes with an auditor key, created in the stack's own database once it runs:
#   podman compose -f deploy/compose.yaml run --rm upcoach keys create --user prometheus --role auditor \
#     | tail -n 1 > deploy/secrets/prometheus_api_key
new prometheus_api_key "replace-me: see docs/deploy.md"
