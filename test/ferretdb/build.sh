#!/usr/bin/env bash
# Builds the MongoDB wire-protocol test server (FerretDB v1, SQLite backend, embedded by main.go) into a cache
# directory outside the repository and prints the binary's path. A rebuild happens only when main.go, go.mod or
# go.sum change. Needs Go and the Go module proxy; the first build takes a few minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AGENTAUTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentauth}
mkdir -p "$cache"
stamp=$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
bin="$cache/ferretdb-test-$stamp"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "build.sh: Go is required to build the FerretDB test server (or set MONGODB_URI to a running MongoDB)" >&2; exit 1; }
  echo "building FerretDB test server into $bin (first time: a few minutes)" >&2
  # A temporary name of this build's own: two builds at once (a test run started while CI builds) each finish, and
  # the last rename wins with the same binary.
  (cd "$here" && go build -trimpath -ldflags=-checklinkname=0 -o "$bin.$$.tmp" . && mv -f "$bin.$$.tmp" "$bin")
fi
echo "$bin"
