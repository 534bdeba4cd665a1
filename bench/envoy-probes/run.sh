#!/usr/bin/env bash
# Envoy cost probes (README.md here): the headers filter, Envoy's Lua and native equivalents and
# `probe.wat` with one configuration per host-call pattern, all in one `tollgate envoy --compare`
# run. Usage: bench/envoy-probes/run.sh [ROUNDS] [REQUESTS_PER_ROUND]. Needs `wat2wasm` (Debian:
# wabt), a built CLI (`cargo build --workspace`), the filters (`cargo xtask build`) and Envoy
# (`cargo xtask envoy`, or ENVOY_BIN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wat2wasm "$here/probe.wat" -o "$work/probe.wasm"
probes=(
  "floor="
  "get10=gggggggggg"
  "found10=ffffffffff"
  "add10=aaaaaaaaaa"
  "replace10=rrrrrrrrrr"
  "replace10-response=RRRRRRRRRR"
  "remove10-response=DDDDDDDDDD"
  "pairs=p"
  "headers-calls=prraDDRRRGAGA"
)
alternatives=(
  --alternative "lua=$root/envoy/headers/lua.yaml"
  --alternative "native=$root/envoy/headers/native.yaml"
)
for probe in "${probes[@]}"; do
  name=${probe%%=*}
  ops=${probe#*=}
  cat > "$work/$name.yaml" <<YAML
http_filters:
  - name: envoy.filters.http.wasm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
      config:
        name: probe-$name
        root_id: probe
        vm_config:
          vm_id: probe-$name
          runtime: envoy.wasm.runtime.v8
          code: { local: { filename: "$work/probe.wasm" } }
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: "$ops"
YAML
  alternatives+=(--alternative "$name=$work/$name.yaml")
done
"$root/target/debug/tollgate" envoy "$root/traffic/demo.har" \
  --filter "$root/target/filters/headers.wasm" --config "@$root/filters/headers/demo.json" \
  --compare --rounds "${1:-20}" --requests-per-round "${2:-1000}" "${alternatives[@]}"
