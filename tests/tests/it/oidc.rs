//! The `oidc` filter through a real Envoy against the real OpenID provider (npm
//! `oidc-provider`, tests/oidc-provider): a browser's first request is redirected to the
//! provider, the test user logs in and consents, the callback sets the session cookie and the
//! upstream is reached with the ID token's claims; then the attacks a browser or a forger can
//! mount at the proxy (forged and replayed state, tampered, truncated and retired-key session
//! cookies, open redirect, forged identity headers), API clients, and logout.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_tests::browser::{self, Browser};
use tollgate_tests::envoy::{Envoy, EnvoyConfig, free_port};
use tollgate_tests::http1::header;
use tollgate_tests::oidc::{self, Provider};
use tollgate_tests::paths;
use tollgate_tests::upstream::{Upstream, text_response};

/// The filter under test.
const FILTER: &str = "oidc";

/// demo.json pointed at the running provider and at Envoy's port, with `keys`.
fn configuration(provider: &Provider, port: u16, keys: &[&str]) -> Result<String> {
    configuration_with(provider, port, keys, None)
}

fn configuration_with(
    provider: &Provider,
    port: u16,
    keys: &[&str],
    refresh_before_s: Option<u64>,
) -> Result<String> {
    configuration_for(provider.issuer(), port, keys, refresh_before_s)
}

/// demo.json pointed at the provider `issuer` and at Envoy's port.
fn configuration_for(
    issuer: &str,
    port: u16,
    keys: &[&str],
    refresh_before_s: Option<u64>,
) -> Result<String> {
    let demo = std::fs::read_to_string(paths::root().join("filters/oidc/demo.json"))?;
    let mut config: Value = serde_json::from_str(&demo)?;
    config["issuer"] = issuer.into();
    config["redirect_uri"] = format!("http://127.0.0.1:{port}/oidc/callback").into();
    config["post_logout_redirect_uri"] = format!("http://127.0.0.1:{port}/").into();
    config["scopes"] = serde_json::json!(["openid", "email", "offline_access"]);
    if !keys.is_empty() {
        config["session_keys"] = serde_json::json!(keys);
    }
    if let Some(before) = refresh_before_s {
        config["refresh_before_s"] = before.into();
    }
    Ok(config.to_string())
}

fn start_envoy(
    provider: &Provider,
    upstream: &Upstream,
    port: u16,
    keys: &[&str],
    label: &str,
) -> Result<Envoy> {
    start_envoy_with(
        provider,
        upstream,
        port,
        &configuration(provider, port, keys)?,
        label,
    )
}

fn start_envoy_with(
    provider: &Provider,
    upstream: &Upstream,
    port: u16,
    plugin_configuration: &str,
    label: &str,
) -> Result<Envoy> {
    start_envoy_via(provider.addr(), upstream, port, plugin_configuration, label)
}

/// As [`start_envoy_with`], the `idp` cluster going to `idp` (the provider or a proxy before it).
fn start_envoy_via(
    idp: std::net::SocketAddr,
    upstream: &Upstream,
    port: u16,
    plugin_configuration: &str,
    label: &str,
) -> Result<Envoy> {
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .set_first_listener_port(port)?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("idp", idp)?
        .set_plugin_configuration(plugin_configuration)?;
    config.use_filters_from(&paths::filters_dir()?)?;
    Envoy::start(&config, label)
}

/// Logs `user` in through Envoy from `/app?x=1`: returns the callback URL the provider sent the
/// browser to (not requested yet) and the login cookie the filter set.
fn to_callback(user: &mut Browser, site: &str) -> Result<(String, String)> {
    let callback = format!("{site}/oidc/callback");
    let landed = oidc::log_in(user, &format!("{site}/app?x=1"), oidc::USER, &callback)?;
    let authority = site.trim_start_matches("http://");
    let login = user
        .cookies(authority)
        .into_iter()
        .find(|(name, _)| name == "tollgate_session_login")
        .map(|(_, value)| value)
        .context("no login cookie after the redirect")?;
    Ok((landed, login))
}

fn session_cookie(user: &Browser, authority: &str) -> Option<String> {
    user.cookies(authority)
        .into_iter()
        .find(|(name, _)| name == "tollgate_session")
        .map(|(_, value)| value)
}

#[test]
fn envoy_logs_a_browser_in_with_the_real_provider_and_refuses_the_attacks() -> Result<()> {
    let provider = Provider::start()?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let port = free_port()?;
    let envoy = start_envoy(&provider, &upstream, port, &[], "oidc")?;
    let site = format!("http://127.0.0.1:{port}");
    let authority = format!("127.0.0.1:{port}");
    envoy.explain((|| {
        let mut user = Browser::new();
        // The first request: redirected to the provider's authorization endpoint.
        let first = user.request(
            "GET",
            &format!("{site}/app?x=1"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(first.status == 302, "{first:?}");
        let location = header(&first.headers, "location").context("no location")?;
        ensure!(
            location.starts_with(&format!("{}/auth?", provider.issuer())),
            "{location}"
        );
        ensure!(browser::query_param(location, "code_challenge_method").as_deref() == Some("S256"));
        ensure!(upstream.take_requests().is_empty());

        // Login and consent at the provider, back to the callback: session set, back to /app.
        let (callback, login_cookie) = to_callback(&mut user, &site)?;
        let back = user.request("GET", &callback, &[("accept", "text/html")], b"")?;
        ensure!(back.status == 302, "callback: {back:?}");
        ensure!(
            header(&back.headers, "location") == Some("/app?x=1"),
            "{back:?}"
        );
        let session = session_cookie(&user, &authority).context("no session cookie")?;
        let set = tollgate_tests::http1::header_values(&back.headers, "set-cookie");
        ensure!(
            set.iter().any(|c| c.starts_with("tollgate_session=")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax")),
            "{set:?}"
        );

        // The upstream is reached with the claims, and only the filter's.
        let got = user.request(
            "GET",
            &format!("{site}/app?x=1"),
            &[("accept", "text/html"), ("x-user", "mallory")],
            b"",
        )?;
        ensure!(got.status == 200 && got.body == b"the app", "{got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "x-user") == Some(oidc::USER),
            "{ups:?}"
        );
        ensure!(
            header(&ups[0].headers, "x-user-email") == Some("alice@tollgate.test"),
            "{ups:?}"
        );
        ensure!(
            !header(&ups[0].headers, "cookie")
                .unwrap_or_default()
                .contains("tollgate_session"),
            "the session cookie went upstream: {ups:?}"
        );

        // Replayed callback (the same state and login cookie again): refused.
        let mut replay = Browser::new();
        replay.set_cookie(&authority, "tollgate_session_login", &login_cookie);
        let got = replay.request("GET", &callback, &[("accept", "text/html")], b"")?;
        ensure!(got.status == 400, "replayed state: {got:?}");

        // Forged state: the login cookie of one login, the state of nothing.
        let mut forger = Browser::new();
        let (callback2, _) = to_callback(&mut forger, &site)?;
        let forged = callback2.replace("state=", "state=x");
        let got = forger.request("GET", &forged, &[("accept", "text/html")], b"")?;
        ensure!(got.status == 400, "forged state: {got:?}");
        // A callback without the login cookie (login CSRF: another browser's code).
        let got = Browser::new().request("GET", &callback2, &[("accept", "text/html")], b"")?;
        ensure!(got.status == 400, "no login cookie: {got:?}");

        // Tampered and truncated session cookies: back to the provider, never upstream.
        for (what, value) in [
            ("tampered", {
                let mut v = session.clone().into_bytes();
                let i = v.len() / 2;
                v[i] = if v[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(v)?
            }),
            ("truncated", session[..session.len() - 8].to_string()),
        ] {
            let mut other = Browser::new();
            other.set_cookie(&authority, "tollgate_session", &value);
            let got = other.request(
                "GET",
                &format!("{site}/app"),
                &[("accept", "text/html")],
                b"",
            )?;
            ensure!(got.status == 302, "{what} cookie: {got:?}");
        }

        // Open redirect through the post-login URL: refused.
        let got = user.request(
            "GET",
            &format!("{site}/oidc/login?return_to=https%3A%2F%2Fevil.test%2F"),
            &[],
            b"",
        )?;
        ensure!(got.status == 400, "open redirect: {got:?}");
        let got = user.request(
            "GET",
            &format!("{site}/oidc/login?return_to=%2F%2Fevil.test"),
            &[],
            b"",
        )?;
        ensure!(got.status == 400, "protocol-relative redirect: {got:?}");

        // API clients without a session: 401, no redirect.
        let got = Browser::new().request(
            "GET",
            &format!("{site}/api"),
            &[("accept", "application/json")],
            b"",
        )?;
        ensure!(got.status == 401, "{got:?}");
        ensure!(
            upstream.take_requests().is_empty(),
            "a refused request went upstream"
        );

        // Logout: session cleared, browser sent to the provider's end_session_endpoint.
        let got = user.request("GET", &format!("{site}/oidc/logout"), &[], b"")?;
        ensure!(got.status == 302, "{got:?}");
        let location = header(&got.headers, "location").unwrap_or_default();
        ensure!(
            location.starts_with(&format!(
                "{}/session/end?client_id=tollgate-web",
                provider.issuer()
            )),
            "{location}"
        );
        ensure!(
            session_cookie(&user, &authority).is_none(),
            "session cookie kept after logout"
        );
        let got = user.request(
            "GET",
            &format!("{site}/app"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(got.status == 302, "after logout: {got:?}");
        Ok(())
    })())?;
    drop(envoy);

    // Key rotation through real Envoys: a session sealed under key A opens when A is second
    // (B first), and is refused once A is retired.
    let (a, b) = (
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
    );
    let port = free_port()?;
    let site = format!("http://127.0.0.1:{port}");
    let authority = format!("127.0.0.1:{port}");
    let session = {
        let envoy = start_envoy(&provider, &upstream, port, &[a], "oidc-key-a")?;
        let mut user = Browser::new();
        envoy.explain((|| {
            let (callback, _) = to_callback(&mut user, &site)?;
            let back = user.request("GET", &callback, &[("accept", "text/html")], b"")?;
            ensure!(back.status == 302, "{back:?}");
            session_cookie(&user, &authority).context("no session")
        })())?
    };
    for (keys, admitted) in [(&[b, a][..], true), (&[b][..], false)] {
        let envoy = start_envoy(&provider, &upstream, port, keys, "oidc-rotated")?;
        envoy.explain((|| {
            let mut user = Browser::new();
            user.set_cookie(&authority, "tollgate_session", &session);
            let got = user.request(
                "GET",
                &format!("{site}/app"),
                &[("accept", "text/html")],
                b"",
            )?;
            ensure!((got.status == 200) == admitted, "keys {keys:?}: {got:?}");
            Ok(())
        })())?;
    }
    Ok(())
}

/// Near the access token's expiry the filter refreshes the session with the refresh token at the
/// real provider: the request still goes upstream, and the response carries the new session.
#[test]
fn envoy_refreshes_the_session_before_the_access_token_expires() -> Result<()> {
    let provider = Provider::start_with(oidc::ProviderOptions {
        access_token_ttl: 30,
        id_token_ttl: 30,
        ..Default::default()
    })?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let port = free_port()?;
    // Refresh when fewer than 28 s are left: 2 s after login.
    let config = configuration_with(&provider, port, &[], Some(28))?;
    let envoy = start_envoy_with(&provider, &upstream, port, &config, "oidc-refresh")?;
    let site = format!("http://127.0.0.1:{port}");
    let authority = format!("127.0.0.1:{port}");
    envoy.explain((|| {
        let mut user = Browser::new();
        let (callback, _) = to_callback(&mut user, &site)?;
        let back = user.request("GET", &callback, &[("accept", "text/html")], b"")?;
        ensure!(back.status == 302, "{back:?}");
        let first = session_cookie(&user, &authority).context("no session")?;
        // Within the window (no refresh yet): the same session, no new cookie.
        let got = user.request(
            "GET",
            &format!("{site}/app"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(got.status == 200, "{got:?}");
        ensure!(
            tollgate_tests::http1::header(&got.headers, "set-cookie").is_none(),
            "{got:?}"
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
        let got = user.request(
            "GET",
            &format!("{site}/app"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(got.status == 200 && got.body == b"the app", "{got:?}");
        let second = session_cookie(&user, &authority).context("session dropped")?;
        ensure!(second != first, "no refreshed session cookie: {got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 2, "{ups:?}");
        ensure!(
            header(&ups[1].headers, "x-user") == Some(oidc::USER),
            "{ups:?}"
        );
        Ok(())
    })())
}

/// An issuer that is not the one the provider names in its discovery document (here the same
/// provider reached as `localhost`): refused at discovery, fail closed, nothing upstream.
#[test]
fn envoy_refuses_a_provider_naming_another_issuer() -> Result<()> {
    let provider = Provider::start()?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let port = free_port()?;
    let mut config: Value = serde_json::from_str(&configuration(&provider, port, &[])?)?;
    config["issuer"] = provider.issuer().replace("127.0.0.1", "localhost").into();
    let envoy = start_envoy_with(
        &provider,
        &upstream,
        port,
        &config.to_string(),
        "oidc-issuer",
    )?;
    envoy.explain((|| {
        let got = Browser::new().request(
            "GET",
            &format!("http://127.0.0.1:{port}/app"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(got.status == 503, "{got:?}");
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}

/// RP-initiated logout through Envoy: the filter clears the session and sends the browser to the
/// provider's end-session page; once the user confirms, the provider ends its own session and
/// returns to the site, where a new visit needs a new login at the provider (its login form, not
/// a silent return).
#[test]
fn envoy_logs_out_at_the_provider_too() -> Result<()> {
    let port = free_port()?;
    let site = format!("http://127.0.0.1:{port}");
    let provider = Provider::start_with(oidc::ProviderOptions {
        post_logout_redirect_uri: Some(format!("{site}/")),
        ..Default::default()
    })?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let envoy = start_envoy(&provider, &upstream, port, &[], "oidc-logout")?;
    let authority = format!("127.0.0.1:{port}");
    envoy.explain((|| {
        let mut user = Browser::new();
        let (callback, _) = to_callback(&mut user, &site)?;
        let back = user.request("GET", &callback, &[("accept", "text/html")], b"")?;
        ensure!(back.status == 302, "{back:?}");
        ensure!(session_cookie(&user, &authority).is_some());
        // A second visit to the provider while its session lasts: no login form (its consent
        // page for offline_access, or straight back).
        let again = user.request(
            "GET",
            &format!("{site}/oidc/login?return_to=%2Fapp"),
            &[],
            b"",
        )?;
        let to_provider = header(&again.headers, "location")
            .context("no redirect")?
            .to_string();
        let callback_prefix = format!("{site}/oidc/callback");
        let (landed, page) = user.navigate(&to_provider, |u| !u.starts_with(&callback_prefix))?;
        let html = String::from_utf8_lossy(&page.body).into_owned();
        ensure!(
            landed.starts_with(&callback_prefix)
                || !html.contains("name=\"prompt\" value=\"login\""),
            "asked to log in again while the provider's session lasts: {html}"
        );

        let out = user.request("GET", &format!("{site}/oidc/logout"), &[], b"")?;
        ensure!(out.status == 302, "{out:?}");
        ensure!(session_cookie(&user, &authority).is_none(), "session kept");
        let end = header(&out.headers, "location")
            .context("no location")?
            .to_string();
        let (url, page) = user.navigate(&end, |_| true)?;
        let html = String::from_utf8_lossy(&page.body).into_owned();
        ensure!(page.status == 200, "{url}: {html}");
        let action = browser::form_action(&html).with_context(|| format!("no form: {html}"))?;
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .with_context(|| format!("no xsrf: {html}"))?
            .to_string();
        let action = if action.starts_with("http") {
            action
        } else {
            format!("{}{action}", provider.issuer())
        };
        let (after, _) = user.submit(&action, &[("xsrf", &xsrf), ("logout", "yes")], |u| {
            !u.starts_with(&site)
        })?;
        ensure!(
            after == format!("{site}/"),
            "not back at the site after logout: {after}"
        );

        // The provider's session is over: a new visit shows its login form.
        let (url, page) = user.navigate(&format!("{site}/app"), |u| {
            !u.starts_with(&format!("{site}/oidc/callback"))
        })?;
        let html = String::from_utf8_lossy(&page.body);
        ensure!(
            html.contains("name=\"prompt\" value=\"login\""),
            "no login form after logout ({url}): {html}"
        );
        ensure!(
            upstream.take_requests().is_empty(),
            "nothing reached the upstream in this test"
        );
        Ok(())
    })())
}

/// Envoy's native `oauth2` filter (envoy/oidc/native.yaml) next to this filter, on the same
/// provider and browser flow where they overlap: both send a browser to the provider with PKCE
/// `S256`, come back through the callback with cookies and reach the upstream; both answer a
/// JSON client 401 and let pass-through paths by. What differs is asserted too: Envoy's filter
/// forwards the access token (`authorization: Bearer`) where ours forwards claims, and sets its
/// tokens in several cookies where ours seals one session.
#[test]
fn envoy_native_oauth2_next_to_the_filter() -> Result<()> {
    let provider = Provider::start()?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let port = free_port()?;
    let dir = paths::work_dir()?.join(format!("oidc-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut native = std::fs::read_to_string(paths::root().join("envoy/oidc/native.yaml"))?
        .replace("127.0.0.1:9400", &provider.addr().to_string())
        .replace("127.0.0.1:10000", &format!("127.0.0.1:{port}"));
    for secret in ["native-token-secret.yaml", "native-hmac-secret.yaml"] {
        let from = paths::root().join("envoy/oidc").join(secret);
        let to = dir.join(secret);
        std::fs::copy(&from, &to)?;
        native = native.replace(&format!("envoy/oidc/{secret}"), &to.display().to_string());
    }
    let native_path = dir.join("native.yaml");
    std::fs::write(&native_path, native)?;
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .set_first_listener_port(port)?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("idp", provider.addr())?
        .use_native_alternative(&native_path)?;
    let envoy = Envoy::start(&config, "oidc-native")?;
    let site = format!("http://127.0.0.1:{port}");
    envoy.explain((|| {
        let mut user = Browser::new();
        let first = user.request(
            "GET",
            &format!("{site}/app?x=1"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(first.status == 302, "{first:?}");
        let location = header(&first.headers, "location").context("no location")?;
        ensure!(
            location.starts_with(&format!("{}/auth?", provider.issuer())),
            "{location}"
        );
        ensure!(
            browser::query_param(location, "code_challenge_method").as_deref() == Some("S256"),
            "{location}"
        );
        let callback = format!("{site}/oidc/callback");
        let landed = oidc::log_in(&mut user, &format!("{site}/app?x=1"), oidc::USER, &callback)?;
        let back = user.request("GET", &landed, &[("accept", "text/html")], b"")?;
        ensure!(back.status == 302, "callback: {back:?}");
        let names: Vec<String> = user
            .cookies(&format!("127.0.0.1:{port}"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        ensure!(
            names.len() > 1,
            "Envoy's filter sets several cookies: {names:?}"
        );
        let got = user.request(
            "GET",
            &format!("{site}/app?x=1"),
            &[("accept", "text/html")],
            b"",
        )?;
        ensure!(got.status == 200 && got.body == b"the app", "{got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "authorization").is_some_and(|a| a.starts_with("Bearer ")),
            "Envoy's filter forwards the access token: {ups:?}"
        );
        ensure!(
            header(&ups[0].headers, "x-user").is_none(),
            "no claim headers natively"
        );
        let got = Browser::new().request(
            "GET",
            &format!("{site}/api"),
            &[("accept", "application/json")],
            b"",
        )?;
        ensure!(got.status == 401, "JSON client: {got:?}");
        let got = Browser::new().request("GET", &format!("{site}/healthz"), &[], b"")?;
        ensure!(got.status == 200, "pass-through: {got:?}");
        Ok(())
    })())
}

/// The committed recording of the browser flow (native traffic format): the first request, the
/// callback and the request with the session, as sent to a real Envoy, each with the provider's
/// answers to the calls the filter made meanwhile (`callouts:`). Re-made by
/// `envoy_flow_recorded_and_replayed_in_the_harness` when `TOLLGATE_RECORD_OIDC=1`.
const RECORDING: &str = "filters/oidc/tests/flow.yaml";

/// One call the filter made to the provider, as the recording proxy forwarded it.
#[derive(Debug, Clone)]
struct ProviderCall {
    request: tollgate_tests::upstream::ReceivedRequest,
    response: tollgate_traffic::HttpResponse,
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length"
    )
}

/// A proxy for the `idp` cluster: every call is forwarded to the real provider and its answer
/// kept, in order.
struct RecordingProxy {
    upstream: Upstream,
    calls: std::sync::Arc<std::sync::Mutex<Vec<ProviderCall>>>,
}

impl RecordingProxy {
    fn start(provider: &Provider) -> Result<RecordingProxy> {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&calls);
        let to = provider.addr();
        let authority = to.to_string();
        let upstream = Upstream::start_with(move |req| {
            let headers: Vec<(&str, &str)> = req
                .headers
                .iter()
                .filter(|(n, _)| !hop_by_hop(n))
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let forward = tollgate_tests::client::request(
                &req.method,
                &authority,
                &req.path,
                &headers,
                &req.body,
            );
            let response = match tollgate_tests::client::send(to, &forward) {
                Ok(mut r) => {
                    r.headers.retain(|(n, _)| !hop_by_hop(n));
                    r
                }
                Err(e) => tollgate_traffic::HttpResponse {
                    status: 502,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: format!("recording proxy: {e:#}").into_bytes(),
                },
            };
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(ProviderCall {
                    request: req.clone(),
                    response: response.clone(),
                });
            response
        })?;
        Ok(RecordingProxy { upstream, calls })
    }

    /// The calls since the last `take`.
    fn take(&self) -> Vec<ProviderCall> {
        std::mem::take(
            &mut *self
                .calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Sends `request` to Envoy at `port` as one recorded exchange `id`: its start time, the
/// response the client got and the provider's answers to the calls made meanwhile.
fn recorded_exchange(
    id: &str,
    port: u16,
    request: tollgate_traffic::HttpRequest,
    proxy: &RecordingProxy,
) -> Result<(
    tollgate_traffic::Exchange,
    tollgate_traffic::HttpResponse,
    Vec<ProviderCall>,
)> {
    let started = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let response = tollgate_tests::client::send(addr, &request)?;
    let calls = proxy.take();
    let exchange = tollgate_traffic::Exchange {
        id: id.into(),
        request,
        response: None,
        details: tollgate_traffic::ExchangeDetails {
            timing: tollgate_traffic::Timing {
                started: Some(started),
                ..Default::default()
            },
            callouts: calls
                .iter()
                .map(|c| tollgate_traffic::Callout {
                    cluster: "idp".into(),
                    response: c.response.clone(),
                })
                .collect(),
            ..Default::default()
        },
    };
    Ok((exchange, response, calls))
}

fn cookie_value(set_cookies: &[&str], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
    })
}

/// The browser flow through a real Envoy against the real provider, the `idp` cluster through
/// a [`RecordingProxy`]: the first request (redirected), the user's login at the provider, the
/// callback with the provider's code and this login's cookie, the request with the session.
/// Then, once the access token is within `REFRESH_BEFORE_S` of its expiry, a request that
/// refreshes the session, and the logout. Asserts what Envoy did; returns the recording with
/// what Envoy's filter sent the provider and answered.
fn record_flow() -> Result<EnvoyFlow> {
    let provider = Provider::start_with(oidc::ProviderOptions {
        access_token_ttl: ACCESS_TOKEN_TTL_S,
        id_token_ttl: ACCESS_TOKEN_TTL_S,
        ..Default::default()
    })?;
    let proxy = RecordingProxy::start(&provider)?;
    let upstream = Upstream::start(text_response(b"the app"))?;
    let port = free_port()?;
    let config = configuration_with(&provider, port, &[], Some(u64::from(REFRESH_BEFORE_S)))?;
    let envoy = start_envoy_via(
        proxy.upstream.addr(),
        &upstream,
        port,
        &config,
        "oidc-record",
    )?;
    let authority = format!("127.0.0.1:{port}");
    let site = format!("http://{authority}");
    envoy.explain((|| {
        let get = |path: &str, headers: &[(&str, &str)]| {
            tollgate_tests::client::request("GET", &authority, path, headers, b"")
        };
        let (first, answer, calls) = recorded_exchange(
            "first",
            port,
            get("/app?x=1", &[("accept", "text/html")]),
            &proxy,
        )?;
        ensure!(answer.status == 302, "{answer:?}");
        ensure!(
            calls.len() == 1 && calls[0].request.path == "/.well-known/openid-configuration",
            "{calls:?}"
        );
        let location = header(&answer.headers, "location").context("no location")?;
        let login = cookie_value(
            &tollgate_tests::http1::header_values(&answer.headers, "set-cookie"),
            "tollgate_session_login",
        )
        .context("no login cookie")?;

        // The user logs in at the provider from this very redirect.
        let mut user = Browser::new();
        let landed = oidc::log_in(
            &mut user,
            location,
            oidc::USER,
            &format!("{site}/oidc/callback"),
        )?;
        let path = landed.trim_start_matches(&site).to_string();
        let cookie = format!("tollgate_session_login={login}");
        let (callback, answer, calls) = recorded_exchange(
            "callback",
            port,
            get(&path, &[("accept", "text/html"), ("cookie", &cookie)]),
            &proxy,
        )?;
        ensure!(answer.status == 302, "callback: {answer:?}");
        ensure!(
            header(&answer.headers, "location") == Some("/app?x=1"),
            "{answer:?}"
        );
        let paths: Vec<&str> = calls.iter().map(|c| c.request.path.as_str()).collect();
        ensure!(paths == ["/token", "/jwks"], "{calls:?}");
        let token_request = calls[0].clone();
        let session = cookie_value(
            &tollgate_tests::http1::header_values(&answer.headers, "set-cookie"),
            "tollgate_session",
        )
        .context("no session cookie")?;

        let cookie = format!("tollgate_session={session}");
        let (app, answer, calls) = recorded_exchange(
            "app",
            port,
            get(
                "/app?x=1",
                &[
                    ("accept", "text/html"),
                    ("x-user", "mallory"),
                    ("cookie", &cookie),
                ],
            ),
            &proxy,
        )?;
        ensure!(
            answer.status == 200 && answer.body == b"the app",
            "{answer:?}"
        );
        ensure!(calls.is_empty(), "{calls:?}");
        ensure!(
            tollgate_tests::http1::header(&answer.headers, "set-cookie").is_none(),
            "{answer:?}"
        );
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "x-user") == Some(oidc::USER),
            "{ups:?}"
        );
        let mut app = app;
        app.response = Some(text_response(b"the app"));

        // Within REFRESH_BEFORE_S of the access token's expiry: refreshed, then upstream.
        std::thread::sleep(std::time::Duration::from_secs(u64::from(
            ACCESS_TOKEN_TTL_S - REFRESH_BEFORE_S + 1,
        )));
        let (mut refresh, answer, calls) = recorded_exchange(
            "refresh",
            port,
            get("/app?x=1", &[("accept", "text/html"), ("cookie", &cookie)]),
            &proxy,
        )?;
        ensure!(answer.status == 200, "refresh: {answer:?}");
        let paths: Vec<&str> = calls.iter().map(|c| c.request.path.as_str()).collect();
        ensure!(paths == ["/token"], "refresh: {calls:?}");
        let refresh_request = calls[0].clone();
        let refreshed = cookie_value(
            &tollgate_tests::http1::header_values(&answer.headers, "set-cookie"),
            "tollgate_session",
        )
        .context("no refreshed session cookie")?;
        ensure!(refreshed != session, "the same session after the refresh");
        refresh.response = Some(text_response(b"the app"));
        ensure!(upstream.take_requests().len() == 1);

        let cookie = format!("tollgate_session={refreshed}");
        let (logout, answer, calls) = recorded_exchange(
            "logout",
            port,
            get("/oidc/logout", &[("cookie", &cookie)]),
            &proxy,
        )?;
        ensure!(answer.status == 302, "logout: {answer:?}");
        ensure!(calls.is_empty(), "logout: {calls:?}");
        let logout_location = header(&answer.headers, "location")
            .context("logout: no location")?
            .to_string();
        Ok(EnvoyFlow {
            recording: tollgate_traffic::Traffic {
                source: None,
                exchanges: vec![first, callback, app, refresh, logout],
                warnings: Vec::new(),
            },
            token_request,
            refresh_request,
            logout_location,
        })
    })())
}

/// The access and ID tokens' lifetime at the provider in the recorded flow.
const ACCESS_TOKEN_TTL_S: u32 = 30;
/// The filter's `refresh_before_s` in the recorded flow: refreshed 2 s after login.
const REFRESH_BEFORE_S: u32 = 28;

/// The recorded flow and what Envoy's filter did in it that the recording does not hold.
struct EnvoyFlow {
    recording: tollgate_traffic::Traffic,
    /// The code exchange Envoy's filter sent the provider.
    token_request: ProviderCall,
    /// The refresh Envoy's filter sent the provider.
    refresh_request: ProviderCall,
    /// Where Envoy's filter sent the browser at logout.
    logout_location: String,
}

fn unix_nanos(exchange: &tollgate_traffic::Exchange) -> Result<u64> {
    let started = exchange
        .details
        .timing
        .started
        .as_deref()
        .with_context(|| format!("exchange {}: no timing.started", exchange.id))?;
    let at = chrono::DateTime::parse_from_rfc3339(started)
        .with_context(|| format!("exchange {}: timing.started {started}", exchange.id))?;
    u64::try_from(
        at.timestamp_nanos_opt()
            .context("timing.started out of range")?,
    )
    .context("timing.started before 1970")
}

/// A form's (or query's) parameters, sorted.
fn form_params(body: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = body
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    params.sort();
    params
}

/// Replays the recorded flow through the built filter in the harness, one VM for the whole
/// flow, the clock at the recording's times (the ID token's `iat`/`exp` are the provider's),
/// the provider's recorded answers as each exchange's callout stubs. The same outcomes as
/// through Envoy: the first request redirected (the harness's own state, nonce and PKCE
/// challenge, from its seeded generator), the callback (the recorded code, state and login
/// cookie) answered with the recorded tokens and setting the session cookie, the next request
/// with that cookie reaching the upstream with the claims; the callback replayed is refused.
/// Then, at the recorded time of the refresh, the session refreshed with the recorded answer,
/// and the logout. With `envoy` (the live run), the harness's token and refresh requests must
/// carry the same parameters as Envoy's (code, PKCE verifier opened from Envoy's login cookie,
/// redirect URI, client; the refresh token) and the logout go where Envoy's did.
fn replay_flow(recording: &tollgate_traffic::Traffic, envoy: Option<&EnvoyFlow>) -> Result<()> {
    let [first, callback, app, refresh, logout] = &recording.exchanges[..] else {
        anyhow::bail!("expected 5 exchanges, found {}", recording.exchanges.len());
    };
    let discovery: Value = serde_json::from_slice(
        &first
            .details
            .callouts
            .first()
            .context("the first exchange has no discovery answer")?
            .response
            .body,
    )?;
    let issuer = discovery["issuer"]
        .as_str()
        .context("no issuer")?
        .to_string();
    let port: u16 = first
        .request
        .authority
        .rsplit(':')
        .next()
        .context("no port")?
        .parse()?;
    let (mut chain, _) = tollgate_replay::Replay::filter(paths::filter_wasm(FILTER)?)
        .config(configuration_for(
            &issuer,
            port,
            &[],
            Some(u64::from(REFRESH_BEFORE_S)),
        )?)
        .clock_unix_nanos(unix_nanos(first)?)
        .start()?;
    let set_cookies = |h: &[(String, String)]| -> Vec<String> {
        tollgate_tests::http1::header_values(h, "set-cookie")
            .into_iter()
            .map(str::to_string)
            .collect()
    };

    // The first request: redirected with the harness's own state, nonce and PKCE.
    let (out, _, logs) = chain.exchange(&chain.input_for(first));
    ensure!(out.upstream_request.is_none(), "first: went upstream");
    ensure!(out.client_response.status == 302, "first: {out:?} {logs:?}");
    let location = header(&out.client_response.headers, "location").context("no location")?;
    ensure!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    for name in ["state", "nonce", "code_challenge"] {
        let value = browser::query_param(location, name).unwrap_or_default();
        ensure!(value.len() == 43, "{name} in {location}");
    }
    ensure!(browser::query_param(location, "code_challenge_method").as_deref() == Some("S256"));
    let cookies = set_cookies(&out.client_response.headers);
    ensure!(
        cookies
            .iter()
            .any(|c| c.starts_with("tollgate_session_login=") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
    let calls: Vec<String> = out
        .callout_requests
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.cluster,
                header(&c.headers, ":path").unwrap_or_default()
            )
        })
        .collect();
    ensure!(
        calls == ["idp /.well-known/openid-configuration"],
        "{calls:?}"
    );

    // The callback: the recorded code, state and Envoy's login cookie; the recorded tokens.
    chain.advance(tollgate_replay::recorded_gap(first, callback).unwrap_or_default());
    let (out, _, logs) = chain.exchange(&chain.input_for(callback));
    ensure!(
        out.client_response.status == 302,
        "callback: {out:?} {logs:?}"
    );
    ensure!(
        header(&out.client_response.headers, "location") == Some("/app?x=1"),
        "{out:?}"
    );
    let calls: Vec<String> = out
        .callout_requests
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c.cluster,
                header(&c.headers, ":method").unwrap_or_default(),
                header(&c.headers, ":path").unwrap_or_default()
            )
        })
        .collect();
    ensure!(calls == ["idp POST /token", "idp GET /jwks"], "{calls:?}");
    let token = String::from_utf8(out.callout_requests[0].body.clone())?;
    let code = browser::query_param(&callback.request.path, "code").context("no code")?;
    let params = form_params(&token);
    ensure!(
        params.iter().any(|(k, v)| k == "code" && *v == code)
            && params.iter().any(|(k, _)| k == "code_verifier"),
        "{token}"
    );
    if let Some(envoy) = envoy {
        let envoys = form_params(&String::from_utf8_lossy(&envoy.token_request.request.body));
        ensure!(
            params == envoys,
            "token request: harness {params:?}, Envoy {envoys:?}"
        );
    }
    let cookies = set_cookies(&out.client_response.headers);
    ensure!(
        cookies.iter().any(|c| c.starts_with("tollgate_session=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")),
        "{cookies:?}"
    );
    let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
    let session = cookie_value(&refs, "tollgate_session").context("no session cookie")?;

    // The next request with the harness's session, then with Envoy's: upstream, with the claims.
    let input = with_session(chain.input_for(app), &session);
    for (whose, input) in [("harness", input), ("Envoy", chain.input_for(app))] {
        let (out, _, logs) = chain.exchange(&input);
        let ups = out
            .upstream_request
            .as_ref()
            .with_context(|| format!("{whose}'s session: not upstream: {out:?} {logs:?}"))?;
        ensure!(
            header(&ups.headers, "x-user") == Some(oidc::USER),
            "{whose}: {ups:?}"
        );
        ensure!(
            header(&ups.headers, "x-user-email") == Some("alice@tollgate.test"),
            "{whose}: {ups:?}"
        );
        ensure!(
            !header(&ups.headers, "cookie")
                .unwrap_or_default()
                .contains("tollgate_session"),
            "{whose}: the session cookie went upstream: {ups:?}"
        );
        ensure!(
            out.client_response.status == 200 && out.client_response.body == b"the app",
            "{whose}: {out:?}"
        );
        ensure!(
            out.callout_requests.is_empty(),
            "{whose}: {:?}",
            out.callout_requests
        );
    }

    // The callback again (the same state and login cookie): refused, as by Envoy.
    let (out, _, _) = chain.exchange(&chain.input_for(callback));
    ensure!(
        out.client_response.status == 400,
        "replayed callback: {out:?}"
    );
    ensure!(out.upstream_request.is_none());

    // At the recorded time of the refresh, with the harness's session and with Envoy's: the
    // same refresh request, the recorded answer, a new session, upstream with the claims.
    chain.advance(tollgate_replay::recorded_gap(app, refresh).unwrap_or_default());
    let input = with_session(chain.input_for(refresh), &session);
    for (whose, input) in [("harness", input), ("Envoy", chain.input_for(refresh))] {
        let (out, _, logs) = chain.exchange(&input);
        let ups = out
            .upstream_request
            .as_ref()
            .with_context(|| format!("{whose}'s session, refresh: {out:?} {logs:?}"))?;
        ensure!(
            header(&ups.headers, "x-user") == Some(oidc::USER),
            "{whose}: {ups:?}"
        );
        let calls: Vec<String> = out
            .callout_requests
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    header(&c.headers, ":method").unwrap_or_default(),
                    header(&c.headers, ":path").unwrap_or_default()
                )
            })
            .collect();
        ensure!(calls == ["POST /token"], "{whose}: {calls:?}");
        let params = form_params(&String::from_utf8_lossy(&out.callout_requests[0].body));
        ensure!(
            params
                .iter()
                .any(|(k, v)| k == "grant_type" && v == "refresh_token"),
            "{whose}: {params:?}"
        );
        if let Some(envoy) = envoy {
            let envoys = form_params(&String::from_utf8_lossy(
                &envoy.refresh_request.request.body,
            ));
            ensure!(
                params == envoys,
                "{whose}: refresh request {params:?}, Envoy's {envoys:?}"
            );
        }
        let cookies = set_cookies(&out.client_response.headers);
        let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let renewed = cookie_value(&refs, "tollgate_session").context("no refreshed session")?;
        ensure!(
            renewed != session && !renewed.is_empty(),
            "{whose}: {cookies:?}"
        );
    }

    // Logout with Envoy's refreshed session: cleared, sent where Envoy sent the browser.
    chain.advance(tollgate_replay::recorded_gap(refresh, logout).unwrap_or_default());
    let (out, _, logs) = chain.exchange(&chain.input_for(logout));
    ensure!(
        out.client_response.status == 302,
        "logout: {out:?} {logs:?}"
    );
    let location = header(&out.client_response.headers, "location").unwrap_or_default();
    ensure!(
        location.starts_with(&format!("{issuer}/session/end?client_id=tollgate-web")),
        "{location}"
    );
    if let Some(envoy) = envoy {
        ensure!(
            location == envoy.logout_location,
            "logout: {location}, Envoy's {}",
            envoy.logout_location
        );
    }
    let cookies = set_cookies(&out.client_response.headers);
    ensure!(
        cookies
            .iter()
            .any(|c| c.starts_with("tollgate_session=;") && c.contains("Max-Age=0;")),
        "logout: {cookies:?}"
    );
    ensure!(out.callout_requests.is_empty() && out.upstream_request.is_none());
    Ok(())
}

/// The browser flow recorded through a real Envoy against the real provider (the provider's
/// answers to the filter's calls kept by a proxy before it), then replayed in the harness with
/// those answers as the callout stubs: the same outcomes, and the same token request. With
/// `TOLLGATE_RECORD_OIDC=1` the recording replaces the committed one ([`RECORDING`]).
#[test]
fn envoy_flow_recorded_and_replayed_in_the_harness() -> Result<()> {
    let flow = record_flow()?;
    let recording = &flow.recording;
    replay_flow(recording, Some(&flow))?;
    if std::env::var_os("TOLLGATE_RECORD_OIDC").is_some_and(|v| v == "1") {
        let mut out = Vec::new();
        out.extend_from_slice(
            b"# The oidc browser flow recorded through a real Envoy against the real provider\n\
              # (npm oidc-provider) with the provider's answers as callouts. Re-made by\n\
              # TOLLGATE_RECORD_OIDC=1 cargo test --workspace --test it oidc::envoy_flow_recorded\n",
        );
        tollgate_traffic::native::write_yaml(&mut out, recording)?;
        std::fs::write(paths::root().join(RECORDING), out)?;
    }
    Ok(())
}

/// The committed recording replayed in the harness alone (no provider, no Envoy): the flow
/// works at the recording's times, whatever today's date, with the keys of demo.json.
#[test]
fn harness_replays_the_recorded_browser_flow() -> Result<()> {
    let recording = tollgate_traffic::load(&paths::root().join(RECORDING))?;
    replay_flow(&recording, None)
}

/// `input` with its recorded session cookie replaced by `session` (the harness's own).
fn with_session(
    mut input: tollgate_replay::StreamInput,
    session: &str,
) -> tollgate_replay::StreamInput {
    for (_, value) in input
        .request
        .headers
        .iter_mut()
        .filter(|(n, _)| n == "cookie")
    {
        *value = format!("tollgate_session={session}");
    }
    input
}
