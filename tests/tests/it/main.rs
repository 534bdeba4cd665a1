//! The integration tests, one binary with a module per area:
//! - `architecture`: the crate dependency graph and source checks behind ARCHITECTURE.md.
//! - `plumbing`: the test upstream and client themselves, against each other.
//! - `jwt_auth`: the `jwt-auth` filter in the harness and in a real Envoy fetching its JWKS
//!   from a real server (every algorithm, forgeries, key rotation).
//! - `jwt_auth_keys`: RSA keys of every limb shape and several Ed25519 keys verified by the
//!   wasm module in the harness (the SIMD paths the native tests of `tollgate-jose` cannot run).
//! - `ext_authz`: the `ext-authz` filter in the harness and in a real Envoy with a real
//!   authorization service (allow, deny, slow, down).
//! - `record`: `tollgate record` through a real Envoy, replayed in the harness.
//! - `chain`: key-auth, basic-auth and headers chained in a real Envoy.
//! - `remote_code`: Envoy fetching a filter over HTTP, checked by sha256.
//! - `ship_oci`, `ship_validate`, `ship_schema`: `tollgate package` layouts, WasmPlugin,
//!   TrafficExtension and EnvoyExtensionPolicy validation, configuration schemas in the modules.
//! - `basic_auth`, `key_auth`: the authentication filters in the harness (demo traffic,
//!   attacks) and in a real Envoy (attacks, Prometheus labels).
//! - `suites`: every `filters/<name>/tests/suite.yaml` through the suite runner.
//! - `envoy_headers`: the `headers` filter in a real Envoy and in the harness,
//!   compared request by request.
//! - `trace_diff`: Envoy's `wasm` trace log and the harness's call trace for the same
//!   requests, compared call by call (every filter and a WAT guest).
//! - `envoy_cli`: `tollgate envoy` (library `live`): recordings through a real Envoy diffed
//!   with the harness, and `--compare` (worker CPU per request per configuration).
//! - `envoy_probes`: `bench/envoy-probes/probe.wat` does what its letters say, in the harness
//!   (whole-map writes, patterns per stream, the instructions `x` burns, the `+delete` build).
//!
//! - `callout_parity`: HTTP callout failure modes (slow, reset, closed, down) and header maps
//!   absent in a phase, a WAT guest's view in a real Envoy and in the harness.
//! - `hostile_guests`: Envoy's 1 GiB memory cap and dead VMs (FAIL_CLOSED), a WAT guest in a
//!   real Envoy and in the harness.
//! - `properties`: the built filters through the harness with arbitrary requests, bodies,
//!   chunking, trailers and configurations: no trap, no admission without a valid credential.
//! - `soak`: a bounded run through the full chain in Envoy at fixed concurrency: no unexpected
//!   status, no 5xx, Envoy's RSS flat after warm-up.
//! - `native_parity`: basic-auth, jwt-auth and ext-authz next to Envoy's native `basic_auth`,
//!   `jwt_authn` and `ext_authz` (`envoy/<filter>/native.yaml`), the same requests through both;
//!   and `traffic/auth.yaml` (the cost traffic) in the harness.
//!
//! - `cors`: the `cors` filter next to Envoy's native `cors` (the routes' policies) in a real
//!   Envoy, the same requests in the harness; refused configurations.
//! - `ip_restriction`: the `ip-restriction` filter's bypass attempts in a real Envoy next to
//!   native `rbac` and in the harness; spoofed X-Forwarded-For with no trusted hop; refusals.
//! - `request_block`: the `request-block` filter's bypass attempts in a real Envoy and in the
//!   harness, header and body rules, refusals.
//! - `rate_limit`: the `rate-limit` filter: four harness workers and four Envoy workers under
//!   concurrent load sharing one bucket (next to native `local_ratelimit`), the demo's 429s and
//!   headers, shadow mode, refused configurations.
//! - `json_mask`: the `json-mask` filter in a real Envoy with a client and an upstream writing
//!   bodies whole, byte by byte and in random pieces, the same in the harness; oversize bodies.
//! - `request_validation`: the `request-validation` filter's demo (bodies in pieces, query,
//!   headers) in a real Envoy and in the harness, the same answers; refused configurations.
//!
//! - `hmac_auth`: the `hmac-auth` filter (RFC 9421 signatures) in a real Envoy and the harness:
//!   signed requests admitted once (one of 8 simultaneous copies, 4 workers), replays, swapped bodies and alterations refused.
//! - `oauth2_introspection`: the `oauth2-introspection` filter with the real provider through a
//!   real Envoy (scope, audience, cache, revocation, fail closed) and its answers in the harness.
//! - `oidc_provider`: the real OpenID provider (npm `oidc-provider`) the identity filters are
//!   tested against: discovery, client_credentials tokens, introspection.
//! - `request_id`: the `request-id` filter in a real Envoy next to Envoy's own request ids
//!   and in the harness (ids, W3C trace context, echo, Prometheus labels), refusals.
//! - `custom_response`: the `custom-response` filter's local answers and replaced upstream
//!   errors in a real Envoy and in the harness, next to native `custom_response`; refusals.
//! - `transformer`: the `transformer` filter's JSON body edits through a real Envoy with bodies
//!   written whole, in 1-byte and in random pieces (same bytes, right lengths) and in the
//!   harness; headers, query, paths, redirects; refusals.
//! - `metrics`: the `metrics` filter in a real Envoy, its counters and histograms scraped from
//!   `/stats/prometheus` with route, method and status-class labels; refusals.
//! - `global_rate_limit`: the `global-rate-limit` filter and Envoy's native `ratelimit` against a
//!   real rate limit service (`tollgate-rls`): same decisions, headers and descriptors; the
//!   service down or slow with and without `failure_mode_deny`; refusals.
//! - `response_cache`: the `response-cache` filter in a real Envoy: hits that never reach the
//!   upstream (bodies whole, in 1-byte and random pieces, exact bytes), `Vary`, `If-None-Match`,
//!   revalidation, what is not cached, entries shared by two workers; the harness; refusals.
//!
//! Envoy and the built filters come from `cargo xtask test` (which exports
//! `ENVOY_BIN` and `TOLLGATE_FILTERS_DIR`); without them these tests fail
//! with a message saying so, they never skip.

mod architecture;
mod basic_auth;
mod callout_parity;
mod chain;
mod cors;
mod custom_response;
mod envoy_cli;
mod envoy_headers;
mod envoy_probes;
mod ext_authz;
mod failure_parity;
mod global_rate_limit;
mod grpc_parity;
mod hmac_auth;
mod hostile_guests;
mod ip_restriction;
mod json_mask;
mod jwt_auth;
mod jwt_auth_keys;
mod key_auth;
mod metrics;
mod native_parity;
mod oauth2_introspection;
mod oidc;
mod oidc_provider;
mod plugin_identity;
mod plumbing;
mod properties;
mod rate_limit;
mod record;
mod remote_code;
mod request_block;
mod request_id;
mod request_validation;
mod response_cache;
mod ship_oci;
mod ship_schema;
mod ship_validate;
mod soak;
mod suites;
mod trace_diff;
mod transformer;
