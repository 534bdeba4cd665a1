#!/usr/bin/env bash
# Envoy cost probes (README.md here): the headers filter, Envoy's Lua and native equivalents and
# `probe.wat` with one configuration per host-call pattern, all in one `tollgate envoy --compare`
# run. Usage: bench/envoy-probes/run.sh [ROUNDS] [REQUESTS_PER_ROUND]. Needs `wat2wasm` (Debian:
# wabt), a built CLI (`cargo build --workspace`), the filters (`cargo xtask build`) and Envoy
# (`cargo xtask envoy`, or ENVOY_BIN). BEFORE=<file.wasm> adds an earlier headers module;
# arguments after the first two go to `tollgate envoy` (e.g. `--format json`: every round's figures).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wat2wasm "$here/probe.wat" -o "$work/probe.wasm"
# The same module exporting `proxy_on_delete` too (a fourth guest call per request, as the SDK's
# filters): the probes whose name ends in `+delete`.
sed 's/^ *;;+delete //' "$here/probe.wat" > "$work/probe-delete.wat"
wat2wasm "$work/probe-delete.wat" -o "$work/probe-delete.wasm"
# The headers filter's calls on demo.har in Envoy (`tollgate replay ... --trace`, with the
# `x-request-id` Envoy gives every request: 13.4 host calls, 0.63 values returned per request;
# two thirds of the requests carry `authorization`, 26 of 70 responses lack `x-request-id`).
mirror="prrraDDRRRRGAF|prrraDDRRRRGAF|prraDDRRRGAGA"
probes=(
  "floor="
  "floor+delete="
  "burn50k=xxxxx"
  "get10=gggggggggg"
  "found10=ffffffffff"
  "add10=aaaaaaaaaa"
  "replace10=rrrrrrrrrr"
  "replace10-response=RRRRRRRRRR"
  "remove10-response=DDDDDDDDDD"
  "pairs=p"
  "headers-calls=prraDDRRRGAGA"
  "headers-calls+delete=$mirror"
  "request-singles=prra"
  "request-set=pnnnw"
  "response-singles=DDRRRGAG"
  "response-set=PNNNW"
  "headers-set+delete=pnnnnwPNNNNW|pnnnnwPNNNNW|pnnnwPNNNW"
)
alternatives=(
  --alternative "lua=$root/envoy/headers/lua.yaml"
  --alternative "native=$root/envoy/headers/native.yaml"
)
for probe in "${probes[@]}"; do
  name=${probe%%=*}
  ops=${probe#*=}
  module=probe
  [[ $name == *+delete ]] && module=probe-delete
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
          code: { local: { filename: "$work/$module.wasm" } }
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: "$ops"
YAML
  alternatives+=(--alternative "$name=$work/$name.yaml")
done
# BEFORE=<an earlier headers.wasm>: that module too, with the same configuration, as `headers-before`.
if [[ -n ${BEFORE:-} ]]; then
  {
    cat <<YAML
http_filters:
  - name: envoy.filters.http.wasm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
      config:
        name: headers-before
        root_id: headers-before
        vm_config:
          vm_id: headers-before
          runtime: envoy.wasm.runtime.v8
          code: { local: { filename: "$(realpath "$BEFORE")" } }
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: |
YAML
    sed 's/^/            /' "$root/filters/headers/demo.json"
  } > "$work/headers-before.yaml"
  alternatives+=(--alternative "headers-before=$work/headers-before.yaml")
fi
"$root/target/debug/tollgate" envoy "$root/traffic/demo.har" \
  --filter "$root/target/filters/headers.wasm" --config "@$root/filters/headers/demo.json" \
  --compare --rounds "${1:-20}" --requests-per-round "${2:-1000}" "${alternatives[@]}" "${@:3}"
