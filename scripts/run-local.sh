#!/bin/sh
# `make run`: create a development CA under VAR on first use, then serve it.
set -eu
agentca=$1
var=$2
if [ ! -f "$var/ca.json" ]; then
	"$agentca" init --dir "$var" --name "agentca dev" --trust-domain agentca.internal
fi
exec "$agentca" serve --dir "$var"
