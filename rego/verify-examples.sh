#!/usr/bin/env bash
# Verify the sample tenants end to end with the real `opa` CLI:
#
#   1. `opa check --strict` over each tenant's rego dirs (policies and tests);
#   2. `opa test` over the same dirs (set VERBOSE=1 for `opa test -v`);
#   3. stage the tenant the way the bundle build does: every non-test .rego file of
#      the bundle's `rego` dirs, and every `data` file written as <path>/data.json;
#   4. check that every package and data path sits under the bundle's roots;
#   5. evaluate every example of bundles/<tenant>/examples.json with
#      `opa eval -d <staged> -i <input> data.<path>` and compare with `expect`;
#   6. `opa build -t wasm -e <entrypoint>` for every entrypoint, and (when node is
#      available) list the builtins each module imports from the host, failing on any
#      outside the set the sidecar provides.
#
# Usage: rego/verify-examples.sh [tenant ...]     (default: every bundles/*/bundle.json)
# opa is taken from $PAVILION_OPA, then ./.tools/bin/opa, then PATH. Needs node for
# JSON handling (the project's own runtime).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${PAVILION_OPA:-}" ]]; then
  OPA="$PAVILION_OPA"
elif [[ -x ./.tools/bin/opa ]]; then
  OPA=./.tools/bin/opa
elif command -v opa >/dev/null 2>&1; then
  OPA="$(command -v opa)"
else
  echo "verify-examples: opa not found (set PAVILION_OPA, run 'npm run bootstrap', or put opa on PATH)" >&2
  exit 2
fi
command -v node >/dev/null 2>&1 || { echo "verify-examples: node is required" >&2; exit 2; }

# Builtins the sidecar implements on the host; anything else a module imports fails.
HOST_BUILTINS="time.now_ns time.parse_rfc3339_ns time.date time.clock time.weekday time.add_date time.diff semver.compare units.parse_bytes io.jwt.decode io.jwt.decode_verify crypto.sha256 object.keys net.cidr_merge regex.replace hex.encode urlquery.encode"

if [[ $# -gt 0 ]]; then
  tenants=("$@")
else
  tenants=()
  for f in bundles/*/bundle.json; do
    tenants+=("$(basename "$(dirname "$f")")")
  done
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# json <file> <js expression over `j`>: print the result (strings raw, else JSON).
json() {
  node -e '
    const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const v = (0, eval)("(j) => (" + process.argv[2] + ")")(j);
    if (Array.isArray(v)) { for (const x of v) console.log(typeof x === "string" ? x : JSON.stringify(x)); }
    else console.log(typeof v === "string" ? v : JSON.stringify(v));
  ' "$1" "$2"
}

failures=0
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }

for tenant in "${tenants[@]}"; do
  manifest="bundles/$tenant/bundle.json"
  echo "== $tenant"
  [[ -f "$manifest" ]] || { fail "$manifest not found"; continue; }

  mapfile -t rego_dirs < <(json "$manifest" 'j.rego')
  mapfile -t roots < <(json "$manifest" 'j.roots')
  mapfile -t entrypoints < <(json "$manifest" 'j.entrypoints')
  mapfile -t data_specs < <(json "$manifest" 'j.data.map(d => d.path + "\t" + d.file)')

  # 1-2. check and test the sources as written.
  if "$OPA" check --strict "${rego_dirs[@]}" >"$work/check.log" 2>&1; then
    echo "  opa check --strict: ok"
  else
    cat "$work/check.log"; fail "opa check --strict"
  fi
  test_flags=()
  [[ "${VERBOSE:-}" == "1" ]] && test_flags=(-v)
  if "$OPA" test "${test_flags[@]}" "${rego_dirs[@]}" >"$work/test.log" 2>&1; then
    if [[ "${VERBOSE:-}" == "1" ]]; then cat "$work/test.log"; fi
    echo "  opa test: $(grep -E '^PASS: ' "$work/test.log" || echo 'no tests')"
  else
    cat "$work/test.log"; fail "opa test"
  fi

  # 3. stage.
  stage="$work/stage/$tenant"
  mkdir -p "$stage"
  for dir in "${rego_dirs[@]}"; do
    while IFS= read -r -d '' f; do
      mkdir -p "$stage/$(dirname "$f")"
      cp "$f" "$stage/$f"
    done < <(find "$dir" -type f -name '*.rego' ! -name '*_test.rego' -print0)
  done
  for spec in "${data_specs[@]}"; do
    path="${spec%%$'\t'*}"
    file="${spec#*$'\t'}"
    [[ -f "$file" ]] || { fail "data file $file not found"; continue; }
    mkdir -p "$stage/$path"
    cp "$file" "$stage/$path/data.json"
  done

  # 4. roots.
  under_roots() {
    local p="$1" r
    for r in "${roots[@]}"; do
      [[ "$p" == "$r" || "$p" == "$r/"* ]] && return 0
    done
    return 1
  }
  while IFS= read -r pkg; do
    under_roots "${pkg//./\/}" || fail "package $pkg is outside roots (${roots[*]})"
  done < <(find "$stage" -name '*.rego' -exec sed -n 's/^package \([A-Za-z0-9_.]*\).*/\1/p' {} + | sort -u)
  for spec in "${data_specs[@]}"; do
    under_roots "${spec%%$'\t'*}" || fail "data path ${spec%%$'\t'*} is outside roots (${roots[*]})"
  done
  for ep in "${entrypoints[@]}"; do
    under_roots "$ep" || fail "entrypoint $ep is outside roots (${roots[*]})"
  done

  # 5. examples.
  examples="bundles/$tenant/examples.json"
  if [[ -f "$examples" ]]; then
    count="$(json "$examples" 'j.length')"
    passed=0
    for ((i = 0; i < count; i++)); do
      name="$(json "$examples" "j[$i].name")"
      path="$(json "$examples" "j[$i].path")"
      json "$examples" "j[$i].input" >"$work/input.json"
      json "$examples" "j[$i].expect" >"$work/expect.json"
      if ! "$OPA" eval -d "$stage" -i "$work/input.json" "data.${path//\//.}" --format json >"$work/actual.json" 2>"$work/eval.err"; then
        cat "$work/eval.err"; fail "$tenant example '$name': opa eval failed"; continue
      fi
      if node -e '
        const fs = require("fs");
        const out = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        const expect = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
        const r = out.result && out.result[0] ? out.result[0].expressions[0].value : undefined;
        const canon = (v) => JSON.stringify(v, (k, x) => x && typeof x === "object" && !Array.isArray(x)
          ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x);
        if (r === undefined || canon(r) !== canon(expect)) {
          console.log("    expected: " + canon(expect));
          console.log("    actual:   " + (r === undefined ? "<undefined>" : canon(r)));
          process.exit(1);
        }
      ' "$work/actual.json" "$work/expect.json"; then
        passed=$((passed + 1))
      else
        fail "$tenant example '$name' ($path)"
      fi
    done
    echo "  examples: $passed/$count match opa eval"
  else
    fail "$examples not found"
  fi

  # 6. wasm.
  for ep in "${entrypoints[@]}"; do
    out="$work/wasm-$tenant-${ep//\//_}.tar.gz"
    if ! "$OPA" build -t wasm -e "$ep" -o "$out" "$stage" >"$work/build.log" 2>&1; then
      cat "$work/build.log"; fail "opa build -t wasm -e $ep"; continue
    fi
    rm -rf "$work/wasm" && mkdir -p "$work/wasm"
    tar -xzf "$out" -C "$work/wasm" /policy.wasm 2>/dev/null || tar -xzf "$out" -C "$work/wasm" policy.wasm
    # The module's builtins() export returns a JSON object of the builtins it imports.
    imported="$(node -e '
      (async () => {
        const mod = await WebAssembly.compile(require("fs").readFileSync(process.argv[1]));
        const memory = new WebAssembly.Memory({ initial: 5 });
        const env = { memory };
        for (const imp of WebAssembly.Module.imports(mod)) {
          if (imp.module === "env" && imp.name !== "memory") env[imp.name] = () => { throw new Error(imp.name); };
        }
        const inst = await WebAssembly.instantiate(mod, { env });
        const addr = inst.exports.opa_json_dump(inst.exports.builtins());
        const bytes = new Uint8Array(memory.buffer);
        let end = addr;
        while (bytes[end] !== 0) end++;
        console.log(Object.keys(JSON.parse(Buffer.from(bytes.slice(addr, end)).toString())).sort().join(" "));
      })().catch((e) => { console.error(e); process.exit(1); });
    ' "$work/wasm/policy.wasm")" || { fail "could not read builtins of $ep"; continue; }
    bad=""
    for b in $imported; do
      [[ " $HOST_BUILTINS " == *" $b "* ]] || bad="$bad $b"
    done
    if [[ -n "$bad" ]]; then
      fail "wasm $ep imports builtins the sidecar does not provide:$bad"
    else
      echo "  wasm $ep: ok (host builtins: ${imported:-none})"
    fi
  done
done

if [[ $failures -gt 0 ]]; then
  echo "verify-examples: $failures failure(s)"
  exit 1
fi
echo "verify-examples: all ok"
