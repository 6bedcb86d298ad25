#!/bin/sh
# Example deploy script: each argument arrives as one argument, never through a shell.
set -eu
repo="$1"
commit="$2"
echo "deploying $repo at $commit (ref $DEPLOY_REF)"
echo "run $HOOKRUNNER_RUN_ID, delivery $HOOKRUNNER_DELIVERY_ID, attempt $HOOKRUNNER_ATTEMPT"
sleep 1
echo "deployed"
