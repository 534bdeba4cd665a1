//! The OpenID provider the identity filters are tested against (tests/oidc-provider, installed by
//! `cargo xtask oidc-provider`): it starts, its discovery document names its own issuer and
//! S256-only PKCE, and it issues and introspects access tokens for the test clients.

use anyhow::{Context, Result, ensure};
use base64::Engine;
use tollgate_tests::client;
use tollgate_tests::oidc::{self, Provider};

fn basic(client: (&str, &str)) -> String {
    let pair = format!("{}:{}", client.0, client.1);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// POSTs a form with HTTP Basic client authentication; the JSON answer.
fn post_form(
    provider: &Provider,
    path: &str,
    auth: (&str, &str),
    form: &str,
) -> Result<(u16, serde_json::Value)> {
    let authority = provider.addr().to_string();
    let authorization = basic(auth);
    let request = client::request(
        "POST",
        &authority,
        path,
        &[
            ("authorization", authorization.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    let response = client::send(provider.addr(), &request)?;
    let json = serde_json::from_slice(&response.body)
        .with_context(|| format!("{path} answered {} with a non-JSON body", response.status))?;
    Ok((response.status, json))
}

#[test]
fn provider_serves_discovery_and_introspects_its_tokens() -> Result<()> {
    let provider = Provider::start()?;
    let authority = provider.addr().to_string();
    let discovery = client::send(
        provider.addr(),
        &client::request(
            "GET",
            &authority,
            "/.well-known/openid-configuration",
            &[],
            b"",
        ),
    )?;
    ensure!(discovery.status == 200, "discovery: {}", discovery.status);
    let document: serde_json::Value = serde_json::from_slice(&discovery.body)?;
    ensure!(document["issuer"] == provider.issuer(), "{document}");
    ensure!(
        document["code_challenge_methods_supported"] == serde_json::json!(["S256"]),
        "{document}"
    );
    for endpoint in [
        "jwks_uri",
        "token_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ] {
        let url = document[endpoint].as_str().unwrap_or_default();
        ensure!(url.starts_with(provider.issuer()), "{endpoint}: {url:?}");
    }

    let (status, token) = post_form(
        &provider,
        "/token",
        oidc::SERVICE_CLIENT,
        "grant_type=client_credentials&scope=orders%3Aread",
    )?;
    ensure!(status == 200, "token: {status} {token}");
    let access = token["access_token"].as_str().context("no access_token")?;

    let form = format!("token={access}");
    let (status, answer) = post_form(
        &provider,
        "/token/introspection",
        oidc::GATEWAY_CLIENT,
        &form,
    )?;
    ensure!(status == 200, "introspection: {status} {answer}");
    ensure!(answer["active"] == true, "{answer}");
    ensure!(answer["aud"] == oidc::API_AUDIENCE, "{answer}");
    ensure!(answer["scope"] == "orders:read", "{answer}");
    ensure!(answer["client_id"] == oidc::SERVICE_CLIENT.0, "{answer}");

    // Only the gateway client may introspect; a wrong secret is refused outright.
    let (_, answer) = post_form(
        &provider,
        "/token/introspection",
        oidc::SERVICE_CLIENT,
        &form,
    )?;
    ensure!(answer["active"] == false, "{answer}");
    let (status, answer) = post_form(
        &provider,
        "/token/introspection",
        (oidc::GATEWAY_CLIENT.0, "wrong"),
        &form,
    )?;
    ensure!(
        status == 401 && answer["error"] == "invalid_client",
        "{status} {answer}"
    );
    Ok(())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a compact JWS (not verified: the provider is the one under test here).
fn jwt_claims(token: &str) -> Result<serde_json::Value> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The authorization code flow the `oidc` filter will run, driven against the provider: the test
/// user logs in through its pages, the code is exchanged with the PKCE verifier (a wrong one is
/// refused), the ID token names the issuer, client, user and nonce, the refresh token refreshes,
/// an unknown user cannot log in, and RP-initiated logout knows the client's post-logout URI.
#[test]
fn provider_runs_the_code_flow_with_pkce_for_the_test_user() -> Result<()> {
    use sha2_next::{Digest, Sha256};
    use tollgate_tests::browser::{self, Browser};

    let provider = Provider::start()?;
    // Any 127.0.0.1 port matches the loopback client's registered redirect URI.
    let callback = "http://127.0.0.1:5555/oidc/callback";
    let verifier = b64url(b"a verifier of enough entropy for this test only");
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    let authorize = |state: &str, nonce: &str, challenge: &str| {
        format!(
            "{}/auth?{}",
            provider.issuer(),
            browser::form(&[
                ("client_id", oidc::WEB_CLIENT.0),
                ("response_type", "code"),
                ("scope", "openid email profile offline_access"),
                ("redirect_uri", callback),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("prompt", "consent"),
            ])
        )
    };
    let mut user = Browser::new();
    let landed = oidc::log_in(
        &mut user,
        &authorize("st-1", "nonce-1", &challenge),
        oidc::USER,
        callback,
    )?;
    ensure!(
        browser::query_param(&landed, "state").as_deref() == Some("st-1"),
        "{landed}"
    );
    ensure!(
        browser::query_param(&landed, "iss").as_deref() == Some(provider.issuer()),
        "{landed}"
    );
    let first_code = browser::query_param(&landed, "code").context("no code")?;

    let exchange = |code: &str, verifier: &str| {
        post_form(
            &provider,
            "/token",
            oidc::WEB_CLIENT,
            &browser::form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", callback),
                ("code_verifier", verifier),
            ]),
        )
    };
    let (status, tokens) = exchange(&first_code, &verifier)?;
    ensure!(status == 200, "{status} {tokens}");
    let id_token = tokens["id_token"].as_str().context("no id_token")?;
    let claims = jwt_claims(id_token)?;
    ensure!(claims["iss"] == provider.issuer(), "{claims}");
    ensure!(claims["aud"] == oidc::WEB_CLIENT.0, "{claims}");
    ensure!(
        claims["sub"] == oidc::USER && claims["nonce"] == "nonce-1",
        "{claims}"
    );
    ensure!(claims["email"] == "alice@tollgate.test", "{claims}");

    // A second login (the provider's session is still there) with a wrong verifier: refused.
    let landed = oidc::log_in(
        &mut user,
        &authorize("st-2", "nonce-2", &challenge),
        oidc::USER,
        callback,
    )?;
    let code = browser::query_param(&landed, "code").context("no code")?;
    let (status, refused) = exchange(
        &code,
        &b64url(b"some other verifier of the same length!!!!!"),
    )?;
    ensure!(
        status == 400 && refused["error"] == "invalid_grant",
        "{status} {refused}"
    );

    // Refresh.
    let refresh = tokens["refresh_token"]
        .as_str()
        .context("no refresh_token")?;
    let refresh_with = |token: &str| {
        post_form(
            &provider,
            "/token",
            oidc::WEB_CLIENT,
            &browser::form(&[("grant_type", "refresh_token"), ("refresh_token", token)]),
        )
    };
    let (status, refreshed) = refresh_with(refresh)?;
    ensure!(
        status == 200 && refreshed["id_token"].is_string(),
        "{status} {refreshed}"
    );
    let rotated = refreshed["refresh_token"]
        .as_str()
        .unwrap_or(refresh)
        .to_string();

    // A code presented twice is refused, and the provider revokes what it issued (RFC 6749
    // section 4.1.2): the refresh token stops working.
    let (status, again) = exchange(&first_code, &verifier)?;
    ensure!(
        status == 400 && again["error"] == "invalid_grant",
        "code reused: {status} {again}"
    );
    let (status, revoked) = refresh_with(&rotated)?;
    ensure!(
        status == 400 && revoked["error"] == "invalid_grant",
        "refresh after code reuse: {status} {revoked}"
    );

    // Without a PKCE challenge the provider refuses the authorization request itself.
    let (url, page) = Browser::new().navigate(
        &authorize("st-3", "nonce-3", "")
            .replace("&code_challenge=&code_challenge_method=S256", ""),
        |u| !u.starts_with(callback),
    )?;
    ensure!(
        browser::query_param(&url, "error").is_some() || page.status == 400,
        "no PKCE accepted: {url} {}",
        page.status
    );

    // Only the configured user exists.
    let refused = oidc::log_in(
        &mut Browser::new(),
        &authorize("st-4", "n", &challenge),
        "mallory",
        callback,
    );
    ensure!(refused.is_err(), "an unknown user logged in: {refused:?}");

    // RP-initiated logout: the end-session page for this client and its post-logout URI (matched
    // exactly: oidc-provider 8 has no loopback port exception for post-logout URIs).
    let logout = format!(
        "{}/session/end?{}",
        provider.issuer(),
        browser::form(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "http://127.0.0.1/"),
            ("state", "bye"),
        ])
    );
    let (_, page) = user.navigate(&logout, |_| true)?;
    let html = String::from_utf8_lossy(&page.body);
    ensure!(
        page.status == 200 && html.contains("logout"),
        "{} {html}",
        page.status
    );
    Ok(())
}
