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
