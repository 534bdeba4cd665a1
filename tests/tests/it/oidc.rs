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
    let demo = std::fs::read_to_string(paths::root().join("filters/oidc/demo.json"))?;
    let mut config: Value = serde_json::from_str(&demo)?;
    config["issuer"] = provider.issuer().into();
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
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .set_first_listener_port(port)?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("idp", provider.addr())?
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
