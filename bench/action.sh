#!/bin/bash
# The e2e benchmark's action: one line per run, "<request id> <start time>", appended (atomic for short lines).
printf '%s %s\n' "$1" "$EPOCHREALTIME" >> "$BENCH_OUT"
