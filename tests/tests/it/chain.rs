//! `envoy/chain/envoy.yaml`: every suite filter chained in one real Envoy, in
//! the order the file documents (ip-restriction, request-block, cors, rate-limit,
//! identity scrub, jwt-auth, key-auth, basic-auth, ext-authz, headers), with
//! per-route rules. The traffic-control filters refuse before any credential is
//! looked at (a bad address, an attack pattern, too many requests: 403, 403,
//! 429 even on a route that needs a token; a preflight answered without one).
//! The auth filters: `/api/` needs a JWT,
//! `/partner/` an API key, `/admin/` a password, `/public/` nothing. For each
//! route a request that passes every filter reaches the upstream with the
//! consumer, claims, authorization-service and header-transform headers; a
//! request each filter refuses gets that filter's status, nothing reaches the
//! upstream, and the authorization service is only asked about requests
//! authentication admitted. The JWKS is generated here and written over the
//! shipped placeholder in the parsed YAML.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client::{self, response};
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::jwt::{self, Issuer};
use tollgate_tests::paths;
use tollgate_tests::upstream::{ReceivedRequest, Upstream};
use tollgate_traffic::{Exchange, HttpResponse, Traffic};

/// The chained plugins (`config.name`), in order.
const CHAIN: [&str; 10] = [
    "ip-restriction",
    "request-block",
    "cors",
    "rate-limit",
    "identity-scrub",
    "jwt-auth",
    "key-auth",
    "basic-auth",
    "ext-authz",
    "headers",
];
/// The headers the identity scrub removes from every request.
const IDENTITY_HEADERS: [&str; 6] = [
    "x-consumer",
    "x-api-consumer",
    "x-jwt-sub",
    "x-jwt-scope",
    "x-auth-user",
    "x-auth-scopes",
];
/// The API key of `payments-provider` (admitted on `/partner/`) and of `ops` (not admitted).
const PARTNER_KEY: &str = "tg_demo_partner_7c1e9a4f";
const OPS_KEY: &str = "tg_demo_ops_2b8d5e60";
const ISS: &str = "https://idp.example.com";
const AUD: &str = "shop-api";

fn chain_config() -> Result<EnvoyConfig> {
    EnvoyConfig::load(&paths::envoy_config("chain"))
}

fn http_filters(config: &EnvoyConfig) -> Vec<Value> {
    config
        .value()
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `configuration` of the plugin named `name`, parsed.
fn embedded(config: &EnvoyConfig, name: &str) -> Result<Value> {
    let filter = http_filters(config)
        .into_iter()
        .find(|f| {
            f.pointer("/typed_config/config/name")
                .and_then(Value::as_str)
                == Some(name)
        })
        .with_context(|| format!("no plugin named {name}"))?;
    let text = filter
        .pointer("/typed_config/config/configuration/value")
        .and_then(Value::as_str)
        .with_context(|| format!("{name} has no configuration string"))?;
    serde_json::from_str(text).with_context(|| format!("{name}'s configuration is not JSON"))
}

fn demo(name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&paths::demo_config(name)?)?)
}

#[test]
fn chain_order_and_configurations_are_the_documented_ones() -> Result<()> {
    let config = chain_config()?;
    let filters = http_filters(&config);
    let names: Vec<&str> = filters
        .iter()
        .filter_map(|f| {
            f.pointer("/typed_config/config/name")
                .and_then(Value::as_str)
        })
        .collect();
    ensure!(names == CHAIN, "chain order {names:?}");
    ensure!(
        filters
            .last()
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            == Some("envoy.filters.http.router"),
        "the router is not last"
    );

    // headers, last: demo.json verbatim.
    ensure!(embedded(&config, "headers")? == demo("headers")?);
    // Traffic control: Envoy derives the client address (one trusted hop), so ip-restriction
    // does not count hops again; request-block without its /admin rule; cors verbatim.
    let mut ip = demo("ip-restriction")?;
    ip["xff_trusted_hops"] = json!(0);
    ensure!(embedded(&config, "ip-restriction")? == ip, "ip-restriction");
    let hcm = config
        .value()
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .context("no connection manager")?;
    ensure!(
        hcm["use_remote_address"] == json!(true) && hcm["xff_num_trusted_hops"] == json!(1),
        "the chain's client address is not Envoy's derived one"
    );
    let mut block = demo("request-block")?;
    if let Some(rules) = block["rules"].as_array_mut() {
        rules.retain(|r| r["name"] != "admin");
    }
    ensure!(
        embedded(&config, "request-block")? == block,
        "request-block"
    );
    ensure!(embedded(&config, "cors")? == demo("cors")?, "cors");
    ensure!(
        embedded(&config, "rate-limit")?
            == json!({"limits": [{"name": "per-ip", "key": ["source_ip"], "max_tokens": 100,
                "tokens_per_fill": 100, "fill_interval_ms": 60000}]}),
        "rate-limit"
    );
    // The scrub removes exactly the identity headers the filters below produce.
    let scrub = embedded(&config, "identity-scrub")?;
    ensure!(
        scrub == json!({"request": {"remove": IDENTITY_HEADERS}}),
        "{scrub}"
    );
    // jwt-auth: inline JWKS instead of remote_jwks, nothing else changed.
    let mut jwt_demo = demo("jwt-auth")?;
    let jwt_chain = embedded(&config, "jwt-auth")?;
    let provider = jwt_demo
        .pointer_mut("/providers/0")
        .and_then(Value::as_object_mut)
        .context("jwt-auth demo has no provider")?;
    provider.remove("remote_jwks");
    provider.insert(
        "jwks".into(),
        jwt_chain
            .pointer("/providers/0/jwks")
            .cloned()
            .context("no inline jwks in the chain")?,
    );
    ensure!(jwt_chain == jwt_demo, "jwt-auth differs beyond the JWKS");
    // key-auth and basic-auth: their own consumer headers, rules by Envoy route name.
    let mut key = demo("key-auth")?;
    key["consumer_header"] = json!("x-api-consumer");
    key["rules"] = json!({"routes": [
        {"match": {"route": "partner"}, "config": {"allow": ["payments-provider"]}}]});
    ensure!(embedded(&config, "key-auth")? == key, "key-auth");
    let mut basic = demo("basic-auth")?;
    basic["rules"] = json!({"routes": [
        {"match": {"route": "admin"}, "config": {"allow": ["demo-client", "ops"]}}]});
    ensure!(embedded(&config, "basic-auth")? == basic, "basic-auth");
    // ext-authz: sends the established identity, not raw credentials.
    let mut authz = demo("ext-authz")?;
    authz["allowed_request_headers"] = json!(IDENTITY_HEADERS[..4]);
    ensure!(embedded(&config, "ext-authz")? == authz, "ext-authz");

    // Per-route: which filters each route switches off.
    let routes = config
        .value()
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
        .and_then(Value::as_array)
        .context("no routes")?;
    let off: Vec<(String, Vec<String>)> = routes
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            let mut disabled: Vec<String> = r
                .get("typed_per_filter_config")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter(|(_, c)| c["disabled"] == json!(true))
                .map(|(n, _)| n.clone())
                .collect();
            disabled.sort();
            (name, disabled)
        })
        .collect();
    let expect = |name: &str, list: &[&str]| {
        (
            name.to_string(),
            list.iter()
                .map(|s| format!("tollgate.{s}"))
                .collect::<Vec<_>>(),
        )
    };
    ensure!(
        off == [
            expect("api", &["basic-auth", "key-auth"]),
            expect("partner", &["basic-auth", "jwt-auth"]),
            expect("admin", &["jwt-auth", "key-auth"]),
            expect(
                "public",
                &["basic-auth", "ext-authz", "jwt-auth", "key-auth"]
            ),
        ],
        "per-route filters {off:?}"
    );
    Ok(())
}

#[test]
fn shipped_placeholder_jwks_is_accepted_and_verifies_nothing() -> Result<()> {
    // The shipped configuration, as is, in the harness: the module accepts it (a refused
    // configuration is an error), and a token from a key we hold is refused.
    let config = embedded(&chain_config()?, "jwt-auth")?;
    let issuer = Issuer::es256("placeholder-es256")?;
    let token = issuer.token(&jwt::claims(ISS, AUD));
    let bearer = format!("Bearer {token}");
    let exchange = |id: &str, headers: &[(&str, &str)]| Exchange {
        id: id.into(),
        request: client::request("GET", "api.example.com", "/api/orders", headers, b""),
        response: None,
        details: Default::default(),
    };
    let report = Replay::filter(paths::filter_wasm("jwt-auth")?)
        .config(config.to_string())
        .traffic(Traffic {
            source: None,
            exchanges: vec![
                exchange("no token", &[]),
                exchange("our own key, same kid", &[("authorization", &bearer)]),
            ],
            warnings: Vec::new(),
        })
        .run()?;
    for e in &report.exchanges {
        ensure!(
            e.verdict == Verdict::AnsweredLocally { status: 401 },
            "{}: {:?}",
            e.id,
            e.verdict
        );
    }
    Ok(())
}

fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

fn authz_allows() -> HttpResponse {
    response(
        200,
        &[
            ("x-auth-user", "authz-approved"),
            ("x-auth-scopes", "read write"),
            ("x-auth-internal", "not for upstream"),
        ],
        b"",
    )
}

/// The chain with the test's upstream, authorization service and JWKS.
struct Chain {
    upstream: Upstream,
    authz: Upstream,
    envoy: Envoy,
}

impl Chain {
    fn start(issuer: &Issuer) -> Result<Chain> {
        let upstream =
            Upstream::start(response(200, &[("content-type", "text/plain")], b"origin"))?;
        let authz = Upstream::start(authz_allows())?;
        let mut config = chain_config()?;
        let mut jwt_config = embedded(&config, "jwt-auth")?;
        *jwt_config
            .pointer_mut("/providers/0/jwks")
            .context("no inline jwks to rewrite")? = jwt::jwks(&[issuer]);
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr())?
            .route_cluster_to("authz", authz.addr())?
            .set_named_plugin_configuration("jwt-auth", &jwt_config.to_string())?;
        config.use_filters_from(&paths::filters_dir()?)?;
        let envoy = Envoy::start(&config, "chain")?;
        Ok(Chain {
            upstream,
            authz,
            envoy,
        })
    }

    fn listener(&self) -> SocketAddr {
        self.envoy.listener()
    }

    fn send(&self, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
        client::send(
            self.listener(),
            &client::request("GET", "api.example.com", path, headers, b""),
        )
    }

    /// `path` with `headers` is refused with `status` by the filter named `by`: nothing
    /// reaches the upstream, and the authorization service is not asked.
    fn refused(&self, by: &str, path: &str, headers: &[(&str, &str)], status: u16) -> Result<()> {
        let r = self.send(path, headers)?;
        ensure!(
            r.status == status,
            "{path} refused by {by}: expected {status}, got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let up = self.upstream.take_requests();
        ensure!(up.is_empty(), "{path} ({by}): reached the upstream {up:?}");
        let checks = self.authz.take_requests();
        ensure!(
            checks.is_empty(),
            "{path} ({by}): the authorization service was asked {checks:?}"
        );
        Ok(())
    }

    /// `path` with `headers` passes every filter: returns what the upstream and (when
    /// `authorized`) the authorization service received, after the checks common to all
    /// routes (transforms applied, credentials and forged identity gone).
    fn admitted(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        authorized: bool,
    ) -> Result<(ReceivedRequest, Option<ReceivedRequest>)> {
        let r = self.send(path, headers)?;
        ensure!(
            r.status == 200 && r.body == b"origin",
            "{path}: client got {r:?}"
        );
        ensure!(
            header(&r.headers, "x-tollgate") == Some("demo")
                && header(&r.headers, "x-content-type-options") == Some("nosniff"),
            "{path}: response not transformed {:?}",
            r.headers
        );
        let mut up = self.upstream.take_requests();
        ensure!(up.len() == 1, "{path}: upstream got {up:?}");
        let up = up.remove(0);
        let h = &up.headers;
        ensure!(
            header(h, "x-tollgate") == Some("demo")
                && header(h, "x-original-host") == Some("api.example.com")
                && header(h, "via").is_some_and(|v| v.contains("1.1 tollgate")),
            "{path}: headers filter did not run {h:?}"
        );
        ensure!(
            header(h, "x-debug-trace").is_none(),
            "{path}: x-debug- kept {h:?}"
        );
        for secret in ["authorization", "x-api-key"] {
            ensure!(
                header(h, secret).is_none(),
                "{path}: {secret} reached the upstream"
            );
        }
        ensure!(
            header(h, "x-auth-internal").is_none(),
            "{path}: an authz header not in allowed_upstream_headers went upstream"
        );
        let mut checks = self.authz.take_requests();
        let check = if authorized {
            ensure!(checks.len() == 1, "{path}: authz got {checks:?}");
            let check = checks.remove(0);
            ensure!(
                check.path == format!("/check{path}"),
                "{path}: check path {}",
                check.path
            );
            ensure!(
                header(&check.headers, "authorization").is_none()
                    && header(&check.headers, "x-api-key").is_none(),
                "{path}: raw credentials sent to the authorization service {:?}",
                check.headers
            );
            ensure!(
                header(h, "x-auth-user") == Some("authz-approved")
                    && header(h, "x-auth-scopes") == Some("read write"),
                "{path}: the authorization service's headers did not go upstream {h:?}"
            );
            Some(check)
        } else {
            ensure!(checks.is_empty(), "{path}: authz asked {checks:?}");
            for name in IDENTITY_HEADERS {
                ensure!(header(h, name).is_none(), "{path}: {name} upstream {h:?}");
            }
            None
        };
        Ok((up, check))
    }
}

/// Forged identity headers a client adds to every request: none may survive.
const FORGED: [(&str, &str); 5] = [
    ("x-consumer", "ops"),
    ("x-api-consumer", "ops"),
    ("x-jwt-sub", "admin"),
    ("x-auth-user", "root"),
    ("x-debug-trace", "1"),
];

fn with_forged<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    all.extend_from_slice(&FORGED);
    all
}

#[test]
fn every_route_admits_through_the_whole_chain_in_envoy() -> Result<()> {
    let issuer = Issuer::es256("chain-test")?;
    let chain = Chain::start(&issuer)?;
    let mut claims = jwt::claims(ISS, AUD);
    claims["scope"] = json!("orders:read");
    let bearer = format!("Bearer {}", issuer.token(&claims));
    let password = basic("demo-client:demo-secret-do-not-use");
    chain.envoy.explain((|| {
        // /api/: JWT claims, authz's headers, transforms; forged identity gone.
        let (up, check) = chain.admitted(
            "/api/orders",
            &with_forged(&[("authorization", &bearer)]),
            true,
        )?;
        let check = check.context("no check")?;
        for (h, who) in [(&up.headers, "upstream"), (&check.headers, "authz")] {
            ensure!(
                header(h, "x-jwt-sub") == Some("user-42")
                    && header(h, "x-jwt-scope") == Some("orders:read"),
                "/api/ {who}: claims {h:?}"
            );
            ensure!(
                header(h, "x-consumer").is_none() && header(h, "x-api-consumer").is_none(),
                "/api/ {who}: a forged consumer survived {h:?}"
            );
        }

        // /partner/: key-auth's consumer.
        let (up, check) = chain.admitted(
            "/partner/hooks",
            &with_forged(&[("x-api-key", PARTNER_KEY)]),
            true,
        )?;
        let check = check.context("no check")?;
        for (h, who) in [(&up.headers, "upstream"), (&check.headers, "authz")] {
            ensure!(
                header(h, "x-api-consumer") == Some("payments-provider"),
                "/partner/ {who}: consumer {h:?}"
            );
            ensure!(
                header(h, "x-consumer").is_none() && header(h, "x-jwt-sub").is_none(),
                "/partner/ {who}: a forged identity survived {h:?}"
            );
        }

        // /admin/: basic-auth's consumer.
        let (up, check) = chain.admitted(
            "/admin/users",
            &with_forged(&[("authorization", &password)]),
            true,
        )?;
        let check = check.context("no check")?;
        for (h, who) in [(&up.headers, "upstream"), (&check.headers, "authz")] {
            ensure!(
                header(h, "x-consumer") == Some("demo-client"),
                "/admin/ {who}: consumer {h:?}"
            );
            ensure!(
                header(h, "x-api-consumer").is_none() && header(h, "x-jwt-sub").is_none(),
                "/admin/ {who}: a forged identity survived {h:?}"
            );
        }

        // /public/: no authentication, no authorization call, transforms only.
        chain.admitted("/public/status", &with_forged(&[]), false)?;
        Ok(())
    })())
}

#[test]
fn each_filter_refuses_with_its_status_before_anything_downstream_in_envoy() -> Result<()> {
    let issuer = Issuer::es256("chain-test")?;
    let stranger = Issuer::es256("chain-test")?;
    let chain = Chain::start(&issuer)?;
    let claims = jwt::claims(ISS, AUD);
    let bearer = format!("Bearer {}", issuer.token(&claims));
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-api");
    let wrong_aud = format!("Bearer {}", issuer.token(&wrong_aud));
    let forged = format!("Bearer {}", stranger.token(&claims));
    let password = basic("demo-client:demo-secret-do-not-use");
    let wrong_password = basic("demo-client:guess");
    let not_admitted = basic("legacy:demo-secret-do-not-use");
    chain.envoy.explain((|| {
        // jwt-auth on /api/: other credentials do not count there.
        chain.refused("jwt-auth", "/api/orders", &[], 401)?;
        chain.refused(
            "jwt-auth",
            "/api/orders",
            &[("authorization", &forged)],
            401,
        )?;
        chain.refused(
            "jwt-auth",
            "/api/orders",
            &[("authorization", &wrong_aud)],
            401,
        )?;
        chain.refused(
            "jwt-auth",
            "/api/orders",
            &[("x-api-key", PARTNER_KEY)],
            401,
        )?;
        chain.refused(
            "jwt-auth",
            "/api/orders",
            &[("authorization", &password)],
            401,
        )?;
        let r = chain.send("/api/orders", &[])?;
        ensure!(
            header(&r.headers, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
            "jwt-auth's challenge {:?}",
            r.headers
        );
        ensure!(
            chain.upstream.take_requests().is_empty() && chain.authz.take_requests().is_empty(),
            "a request without a token went past jwt-auth"
        );

        // key-auth on /partner/: a JWT does not count; an unknown key, or a known one not
        // admitted there, is 403 (its README's table).
        chain.refused("key-auth", "/partner/hooks", &[], 401)?;
        chain.refused(
            "key-auth",
            "/partner/hooks",
            &[("x-api-key", "tg_guess")],
            403,
        )?;
        chain.refused(
            "key-auth",
            "/partner/hooks",
            &[("authorization", &bearer)],
            401,
        )?;
        chain.refused("key-auth", "/partner/hooks", &[("x-api-key", OPS_KEY)], 403)?;

        // basic-auth on /admin/, also when the path tries to dodge the route.
        chain.refused("basic-auth", "/admin/users", &[], 401)?;
        chain.refused(
            "basic-auth",
            "/admin/users",
            &[("authorization", &wrong_password)],
            401,
        )?;
        chain.refused(
            "basic-auth",
            "/admin/users",
            &[("authorization", &not_admitted)],
            403,
        )?;
        chain.refused(
            "basic-auth",
            "/admin/users",
            &[("x-api-key", PARTNER_KEY)],
            401,
        )?;
        chain.refused("basic-auth", "//admin/users", &[], 401)?;
        chain.refused("basic-auth", "/public/../admin/users", &[], 401)?;

        // A path no route matches runs every filter: jwt-auth refuses it first.
        chain.refused("jwt-auth (no route)", "/elsewhere", &[], 401)?;

        // ext-authz: authenticated requests the service denies get its answer; a failing
        // service is 403 with no body. It was asked exactly once each time.
        let cases: [(&str, &[(&str, &str)]); 3] = [
            ("/api/orders", &[("authorization", &bearer)]),
            ("/partner/hooks", &[("x-api-key", PARTNER_KEY)]),
            ("/admin/users", &[("authorization", &password)]),
        ];
        for (path, headers) in cases {
            chain.authz.set_response(response(
                403,
                &[("x-deny-reason", "policy")],
                b"denied by policy",
            ));
            let r = chain.send(path, headers)?;
            ensure!(
                r.status == 403 && r.body == b"denied by policy",
                "{path} denied by authz: {r:?}"
            );
            ensure!(header(&r.headers, "x-deny-reason") == Some("policy"));
            chain.authz.set_response(response(500, &[], b"oops"));
            let r = chain.send(path, headers)?;
            ensure!(
                r.status == 403 && r.body.is_empty(),
                "{path} with a failing authz: {r:?}"
            );
            let up = chain.upstream.take_requests();
            ensure!(
                up.is_empty(),
                "{path}: refused by authz but went upstream {up:?}"
            );
            let checks = chain.authz.take_requests();
            ensure!(
                checks.len() == 2,
                "{path}: authz asked {} times",
                checks.len()
            );
            chain.authz.set_response(authz_allows());
        }
        Ok(())
    })())
}

/// `path` with `headers`, sent with `method`.
fn send_as(
    chain: &Chain,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse> {
    client::send(
        chain.listener(),
        &client::request(method, "api.example.com", path, headers, b""),
    )
}

#[test]
fn traffic_control_refuses_before_authentication_in_envoy() -> Result<()> {
    let issuer = Issuer::es256("chain-test")?;
    let chain = Chain::start(&issuer)?;
    chain.envoy.explain((|| {
        // ip-restriction: the address Envoy derives from X-Forwarded-For (one trusted hop).
        // On /api/ without a token, so a 401 would mean authentication ran first.
        for xff in ["10.66.0.9", "8.8.8.8", "10.1.2.3, 10.66.0.9"] {
            chain.refused(
                "ip-restriction",
                "/api/orders",
                &[("x-forwarded-for", xff)],
                403,
            )?;
        }
        let r = chain.send("/public/status", &[("x-forwarded-for", "10.66.0.9")])?;
        ensure!(
            r.body == b"forbidden: your address is not allowed here\n",
            "ip-restriction body {:?}",
            String::from_utf8_lossy(&r.body)
        );
        chain.upstream.take_requests();
        // A denied address a client writes further left is not the one that counts.
        chain.admitted(
            "/public/status",
            &[("x-forwarded-for", "10.66.0.9, 10.1.2.3")],
            false,
        )?;

        // request-block: attack patterns, before authentication.
        chain.refused(
            "request-block",
            "/api/orders",
            &[("user-agent", "sqlmap/1.7")],
            403,
        )?;
        chain.refused("request-block", "/public/.git/config", &[], 403)?;
        chain.refused(
            "request-block",
            "/public/search?q=1%20union%20select%202",
            &[],
            403,
        )?;
        let r = chain.send("/api/orders", &[("user-agent", "nikto")])?;
        ensure!(
            r.body == b"blocked by policy\n",
            "{:?}",
            String::from_utf8_lossy(&r.body)
        );
        chain.upstream.take_requests();

        // cors: a preflight for /api/ is answered without a token; nothing goes upstream.
        let preflight = [
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ];
        let r = send_as(&chain, "OPTIONS", "/api/orders", &preflight)?;
        ensure!(
            r.status == 200
                && header(&r.headers, "access-control-allow-origin")
                    == Some("https://app.example.com")
                && header(&r.headers, "access-control-allow-credentials") == Some("true"),
            "preflight {} {:?}",
            r.status,
            r.headers
        );
        ensure!(
            chain.upstream.take_requests().is_empty(),
            "the preflight went upstream"
        );
        ensure!(
            chain.authz.take_requests().is_empty(),
            "the preflight was authorized"
        );
        // An actual request gets CORS headers on /public/ (any origin there, echoed); one from
        // an origin not allowed on /api/ gets none and still needs its token.
        let r = chain.send("/public/status", &[("origin", "https://anywhere.test")])?;
        ensure!(
            r.status == 200
                && header(&r.headers, "access-control-allow-origin")
                    == Some("https://anywhere.test"),
            "public CORS {} {:?}",
            r.status,
            r.headers
        );
        chain.upstream.take_requests();
        let r = chain.send("/api/orders", &[("origin", "https://evil.test")])?;
        ensure!(
            r.status == 401 && header(&r.headers, "access-control-allow-origin").is_none(),
            "disallowed origin {} {:?}",
            r.status,
            r.headers
        );

        // rate-limit: one client address (its own bucket, 100 a minute, one back every
        // 600 ms) sending 130 requests: the burst, then 429s with Retry-After, on /api/ too,
        // before authentication.
        let client_addr = [("x-forwarded-for", "10.9.9.9")];
        let started = std::time::Instant::now();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..130 {
            let r = chain.send("/public/status", &client_addr)?;
            if r.status == 429 {
                retry_after = header(&r.headers, "retry-after").map(str::to_string);
            }
            statuses.push(r.status);
        }
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        let bound = 100 + started.elapsed().as_millis() as usize / 600 + 1;
        eprintln!(
            "chain rate-limit: {admitted} admitted, {limited} limited of 130 (bound {bound})"
        );
        ensure!(admitted + limited == 130, "other statuses {statuses:?}");
        ensure!(
            (100..=bound).contains(&admitted),
            "{admitted} admitted, bound {bound}"
        );
        ensure!(statuses[..100].iter().all(|s| *s == 200), "{statuses:?}");
        ensure!(retry_after.is_some(), "no retry-after on the 429");
        ensure!(chain.upstream.take_requests().len() == admitted);
        chain.refused("rate-limit", "/api/orders", &client_addr, 429)?;
        // Other clients are not affected.
        chain.admitted("/public/status", &[("x-forwarded-for", "10.9.9.10")], false)?;
        Ok(())
    })())
}
