#!/usr/bin/env python3
"""Every filter's cost, one table: instructions and host calls per request, harness time above
the no-op floor, module size, and (with --envoy) Envoy's added worker CPU next to the no-op wasm
module and Envoy's native equivalent, each filter in its own `tollgate envoy --compare` run.

    cargo build --workspace && cargo xtask build && cargo xtask envoy
    python3 bench/filters/cost.py                      # the harness columns (deterministic counts)
    python3 bench/filters/cost.py --envoy 8 500        # and Envoy's, 8 rounds x 500 per filter
    python3 bench/filters/cost.py --only headers,cors  # some filters

Each filter's traffic and configuration are the ones its README's Cost section names. Figures
go to stdout as a Markdown table; each command and its whole output go to stderr.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLLGATE = os.path.join(ROOT, "target", "debug", "tollgate")
WORK = os.path.join(ROOT, "target", "filter-cost")
LOCK = None  # --lock: a file each Envoy run holds (flock), so other measurements never overlap

# name: (traffic, configuration, extra arguments for both commands, Envoy alternatives)
# A traffic starting with "auth:" is traffic/auth.yaml cut to those paths; "py:" a generator's
# output (filters/<name>/tests/cost.py and its arguments). ":marginal" at the end: the harness
# columns are marginal, the traffic repeated 20 and 40 times (new ids), instructions
# (40 x per_request(40) - 20 x per_request(20)) / 20, so what a VM does once (a JWKS fetch, a
# key parse, a cache miss per token) does not blur what a request costs once the caches are
# warm. A configuration starting with
# "cache:" is that file with `"jwt_cache": {"size": 100}` in every provider. The module is
# target/filters/<name up to a "+">.wasm.
FILTERS = {
    "basic-auth": ("auth:/v1/reports/,/v1/auth/token", "filters/basic-auth/demo.json", [],
                   ["native=envoy/basic-auth/native.yaml"]),
    "cors": ("filters/cors/tests/cost.yaml", "filters/cors/demo.json", [], []),
    "custom-response": ("filters/custom-response/tests/cost.yaml",
                        "filters/custom-response/demo.json", [],
                        ["native=envoy/custom-response/native.yaml"]),
    "ext-authz": ("traffic/demo.har", "filters/ext-authz/demo.json",
                  ["--stub", "authz=filters/ext-authz/demo-stub.yaml"],
                  ["native=envoy/ext-authz/native.yaml"]),
    "global-rate-limit": ("traffic/demo.har", "filters/global-rate-limit/demo.json",
                          ["--stub", "rate_limit_service=filters/global-rate-limit/tests/rls-ok.yaml"],
                          None),
    "headers": ("traffic/demo.har", "filters/headers/demo.json", [],
                ["native=envoy/headers/native.yaml", "lua=envoy/headers/lua.yaml"]),
    "hmac-auth": ("filters/hmac-auth/tests/cost.yaml", "filters/hmac-auth/demo.json", [], []),
    "ip-restriction": ("traffic/demo.har", "filters/ip-restriction/demo.json", [],
                       ["native=envoy/ip-restriction/native.yaml"]),
    "json-mask": ("py:json-mask:200", "filters/json-mask/demo.json", [],
                  ["lua=envoy/json-mask/lua.yaml"]),
    "jwt-auth": ("auth:/v1/orders/rs256/valid,/v1/orders/es256/valid,/v1/orders/es384/valid,"
                 "/v1/orders/eddsa/valid", "filters/jwt-auth/demo.json",
                 ["--stub", "jwks=filters/jwt-auth/demo-stub.yaml"],
                 ["native=envoy/jwt-auth/native.yaml"]),
    "jwt-auth+cache": ("auth:/v1/orders/rs256/valid,/v1/orders/es256/valid,/v1/orders/es384/valid,"
                       "/v1/orders/eddsa/valid:marginal", "cache:filters/jwt-auth/demo.json",
                       ["--stub", "jwks=filters/jwt-auth/demo-stub.yaml"],
                       ["native-cached=envoy/jwt-auth/native-cached.yaml"]),
    "key-auth": ("auth:/v1/events,/v1/webhooks/", "filters/key-auth/demo.json", [], []),
    "metrics": ("filters/metrics/tests/cost.yaml", "filters/metrics/demo.json", [], []),
    "oauth2-introspection": ("filters/oauth2-introspection/tests/cost.yaml",
                             "filters/oauth2-introspection/demo.json",
                             ["--stub", "idp=filters/oauth2-introspection/demo-stub.yaml"], []),
    "oidc": ("filters/oidc/tests/cost.yaml:marginal", "filters/oidc/tests/cost.json",
             ["--stub", "idp=filters/oidc/demo-stub.yaml"], []),
    "oidc+login": ("filters/oidc/tests/login.yaml", "filters/oidc/demo.json",
                   ["--stub", "idp=filters/oidc/demo-stub.yaml"],
                   ["native=envoy/oidc/native.yaml"]),
    "rate-limit": ("traffic/demo.har", "filters/rate-limit/tests/cost.json", [],
                   ["native=envoy/rate-limit/native-cost.yaml"]),
    "request-block": ("filters/request-block/tests/cost.yaml", "filters/request-block/demo.json",
                      [], []),
    "request-id": ("filters/request-id/tests/cost.yaml", "filters/request-id/demo.json", [],
                   ["lua=envoy/request-id/lua.yaml"]),
    "request-validation": ("traffic/demo.har", "filters/request-validation/demo.json", [], []),
    "response-cache": ("py:response-cache:200:hit", "filters/response-cache/demo.json", [],
                       ["native=envoy/response-cache/native.yaml"]),
    "transformer": ("filters/transformer/tests/cost.yaml", "filters/transformer/demo.json", [],
                    None),
}
# None: no Envoy line here (global-rate-limit needs a rate limit service running, see its
# README; transformer's stub upstream answers its rewritten paths differently, see its README).


def run(cmd, **kw):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    sys.stderr.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"cost.py: {' '.join(cmd[:3])}... exited with {out.returncode}")
    return out.stdout


def repeated(path, times):
    """`path` (native JSON) with its exchanges repeated `times` times, new ids."""
    with open(path) as f:
        doc = json.load(f)
    one = doc["exchanges"]
    doc["exchanges"] = [dict(e, id=f"{e['id']} #{i}") for i in range(times) for e in one]
    out = path.replace(".json", f"-x{times}.json")
    with open(out, "w") as f:
        json.dump(doc, f)
    return out


def traffic_of(spec):
    os.makedirs(WORK, exist_ok=True)
    spec = spec.removesuffix(":marginal")
    if spec.startswith("auth:"):
        out = os.path.join(WORK, re.sub(r"[^a-z0-9]+", "-", spec[5:]).strip("-")[:60] + ".yaml")
        cmd = [TOLLGATE, "traffic", "filter", "traffic/auth.yaml"]
        for p in spec[5:].split(","):
            cmd += ["--path", p]
        run(cmd + ["-o", out])
        as_json = out.replace(".yaml", ".json")
        run([TOLLGATE, "traffic", "convert", out, "--to", "json", "-o", as_json])
        return as_json
    if spec.startswith("py:"):
        name, *args = spec[3:].split(":")
        out = os.path.join(WORK, f"{name}-{'-'.join(args)}.json")
        text = run([sys.executable, f"filters/{name}/tests/cost.py", *args])
        with open(out, "w") as f:
            f.write(text)
        return out
    return spec


def config_of(spec):
    if not spec.startswith("cache:"):
        return spec
    with open(os.path.join(ROOT, spec[6:])) as f:
        doc = json.load(f)
    for p in doc["providers"]:
        p["jwt_cache"] = {"size": 100}
    out = os.path.join(WORK, "cached-" + os.path.basename(spec[6:]))
    with open(out, "w") as f:
        json.dump(doc, f)
    return out


def module(name):
    return name.split("+")[0]


def as_json(traffic):
    if traffic.endswith(".json"):
        return traffic
    out = os.path.join(WORK, re.sub(r"[^a-z0-9]+", "-", traffic).strip("-") + ".json")
    run([TOLLGATE, "traffic", "convert", traffic, "--to", "json", "-o", out])
    return out


def harness_columns(name, traffic, config, extra, marginal=False):
    if marginal:
        traffic = as_json(traffic)
        a = harness_columns(name, repeated(traffic, 20), config, extra)
        b = harness_columns(name, repeated(traffic, 40), config, extra)
        a["instructions"] = round((40 * b["instructions"] - 20 * a["instructions"]) / 20)
        a["host_calls"] = (40 * b["host_calls"] - 20 * a["host_calls"]) / 20
        a["above_floor_us"] = b["above_floor_us"]
        return a
    text = run([TOLLGATE, "bench", traffic, "--filter", f"target/filters/{module(name)}.wasm",
                "--config", "@" + config, *extra, "--iterations", "3", "--warmup", "1"])
    det = re.search(r"per request \(deterministic\): (\d+) wasm instructions, ([\d.]+) host calls",
                    text)
    above = re.search(r"^above floor\s+(\d+)", text, re.M)
    return {
        "instructions": int(det.group(1)) if det else None,
        "host_calls": float(det.group(2)) if det else None,
        "above_floor_us": int(above.group(1)) / 1000 if above else None,
        "module_bytes": os.path.getsize(
            os.path.join(ROOT, "target", "filters", f"{module(name)}.wasm")),
    }


def envoy_columns(name, traffic, config, extra, alternatives, rounds, requests):
    cmd = [TOLLGATE, "envoy", traffic, "--filter", f"target/filters/{module(name)}.wasm",
           "--config", "@" + config, *extra, "--compare", "--rounds", str(rounds),
           "--requests-per-round", str(requests)]
    for a in alternatives:
        cmd += ["--alternative", a]
    if LOCK:
        cmd = ["flock", LOCK, *cmd]
    text = run(cmd)
    added = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) > 5 and re.fullmatch(r"[+-]\d+(\.\d+)?", cells[4]):
            added[cells[0]] = float(cells[4])
    return added


def fmt(v, spec):
    return "" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envoy", nargs=2, type=int, metavar=("ROUNDS", "REQUESTS"))
    ap.add_argument("--only", help="comma-separated filter names")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--lock", help="hold this file (flock) during each Envoy run")
    args = ap.parse_args()
    global LOCK
    LOCK = args.lock
    names = args.only.split(",") if args.only else list(FILTERS)
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise SystemExit(f"cost.py: --only: no such filter: {', '.join(unknown)}")
    rows = {}
    head = "| filter | traffic | instructions / request | host calls / request | harness µs above floor (p50) | module bytes |"
    rule = "|---|---|---|---|---|---|"
    if args.envoy:
        head += " Envoy µs added | no-op wasm µs, same run | ratio to no-op | native or Lua µs, same run |"
        rule += "---|---|---|---|"
    print(head)
    print(rule, flush=True)
    for n in names:
        spec, config, extra, alts = FILTERS[n]
        traffic = traffic_of(spec)
        config = config_of(config)
        row = harness_columns(n, traffic, config, extra, spec.endswith(":marginal"))
        line = (f"| {n} | {spec} | {fmt(row['instructions'], ',')} | {fmt(row['host_calls'], '.1f')} "
                f"| {fmt(row['above_floor_us'], '.1f')} | {row['module_bytes']:,} |")
        if args.envoy:
            if alts is None:
                line += " (see README) | | | |"
            else:
                added = envoy_columns(n, traffic, config, extra, alts, *args.envoy)
                row["envoy"] = added
                mine, noop = added.get(module(n)), added.get("noop-wasm")
                ratio = f"{mine / noop:.1f}x" if mine is not None and noop else ""
                others = ", ".join(f"{k} {v:+.1f}" for k, v in added.items()
                                   if k not in (module(n), "noop-wasm", "none"))
                line += f" {fmt(mine, '+.1f')} | {fmt(noop, '+.1f')} | {ratio} | {others} |"
        rows[n] = row
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
