#!/bin/sh
# Example alert recorder: the status is an argument, the raw alert arrives on stdin.
set -eu
echo "alert status: $1"
echo "alert body: $(head -c 2000)"
