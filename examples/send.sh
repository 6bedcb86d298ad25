#!/bin/sh
# Send a signed example delivery to a running hookrunner (make run):
#   examples/send.sh github      examples/payloads/github-push.json
#   examples/send.sh monitoring  examples/payloads/monitoring-overloaded.json
# Signs with the demo secrets the Makefile sets; override them the same way you started the server.
set -eu
hook="$1"; body="$2"; url="${HOOKRUNNER_URL:-http://127.0.0.1:8080}"
case "$hook" in
  github)
    sig=$(openssl dgst -sha256 -hmac "${GITHUB_WEBHOOK_SECRET:-demo-github-secret}" < "$body" | sed 's/^.* //')
    exec curl -sS -X POST "$url/hooks/github" -H 'Content-Type: application/json' \
      -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \
      -H "X-Hub-Signature-256: sha256=$sig" --data-binary "@$body" ;;
  monitoring)
    sig=$(openssl dgst -sha256 -hmac "${MONITORING_SECRET:-demo-monitoring-secret}" < "$body" | sed 's/^.* //')
    exec curl -sS -X POST "$url/hooks/monitoring" -H 'Content-Type: application/json' \
      -H "X-Signature: sha256=$sig" --data-binary "@$body" ;;
  *) echo "usage: $0 github|monitoring PAYLOAD_FILE" >&2; exit 2 ;;
esac
