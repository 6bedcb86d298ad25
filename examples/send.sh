#!/bin/sh
# Send a signed example delivery to a running hookrunner (make run):
#   examples/send.sh github        examples/payloads/github-push.json
#   examples/send.sh monitoring    examples/payloads/monitoring-overloaded.json
#   examples/send.sh alertmanager  examples/payloads/alertmanager-overloaded.json
#   examples/send.sh grafana       examples/payloads/grafana-alert.json
#   examples/send.sh stripe        examples/payloads/stripe-invoice-payment-failed.json
# Signs with the demo secrets the Makefile sets; override them the same way you started the server.
# A query goes after the hook's name, quoted: examples/send.sh 'github?wait=30s' PAYLOAD_FILE
# Extra arguments go to curl (e.g. -i).
# The server is at $HOOKRUNNER_URL (default http://127.0.0.1:8080): set it when the server
# listens elsewhere (HOOKRUNNER_PORT=9090 make run -> HOOKRUNNER_URL=http://127.0.0.1:9090).
set -eu
if [ $# -lt 2 ]; then
  echo "usage: examples/send.sh HOOK[?QUERY] PAYLOAD_FILE [curl arguments...] (hooks: github, monitoring, alertmanager, grafana, stripe; server: \$HOOKRUNNER_URL, default http://127.0.0.1:8080)" >&2
  exit 2
fi
hook="${1%%\?*}"; query=""; body="$2"
case "$1" in *\?*) query="?${1#*\?}" ;; esac
shift 2; url="${HOOKRUNNER_URL:-http://127.0.0.1:8080}"
hmac_hex() { openssl dgst -sha256 -hmac "$1" | sed 's/^.* //'; }
case "$hook" in
  github)
    sig=$(hmac_hex "${GITHUB_WEBHOOK_SECRET:-demo-github-secret}" < "$body")
    exec curl -sS -X POST "$url/hooks/github$query" -H 'Content-Type: application/json' \
      -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \
      -H "X-Hub-Signature-256: sha256=$sig" --data-binary "@$body" "$@" ;;
  monitoring)
    sig=$(hmac_hex "${MONITORING_SECRET:-demo-monitoring-secret}" < "$body")
    exec curl -sS -X POST "$url/hooks/monitoring$query" -H 'Content-Type: application/json' \
      -H "X-Signature: sha256=$sig" --data-binary "@$body" "$@" ;;
  alertmanager)
    # Alertmanager signs nothing: http_config.authorization sends the token as a bearer token.
    exec curl -sS -X POST "$url/hooks/alertmanager$query" -H 'Content-Type: application/json' \
      -H "Authorization: Bearer ${ALERTMANAGER_TOKEN:-demo-alertmanager-token}" \
      --data-binary "@$body" "$@" ;;
  grafana)
    sig=$(hmac_hex "${GRAFANA_SECRET:-demo-grafana-secret}" < "$body")
    exec curl -sS -X POST "$url/hooks/grafana$query" -H 'Content-Type: application/json' \
      -H "X-Grafana-Alerting-Signature: $sig" --data-binary "@$body" "$@" ;;
  stripe)
    # Stripe signs "{timestamp}.{body}"; the event id in the body is the delivery id (dedup).
    ts=$(date +%s)
    sig=$({ printf '%s.' "$ts"; cat "$body"; } | hmac_hex "${STRIPE_SECRET:-whsec_ZGVtby1zdHJpcGUtc2VjcmV0}")
    exec curl -sS -X POST "$url/hooks/stripe$query" -H 'Content-Type: application/json' \
      -H "Stripe-Signature: t=$ts,v1=$sig" --data-binary "@$body" "$@" ;;
  *) echo "usage: $0 github|monitoring|alertmanager|grafana|stripe[?QUERY] PAYLOAD_FILE [CURL_ARGS...]" >&2; exit 2 ;;
esac
