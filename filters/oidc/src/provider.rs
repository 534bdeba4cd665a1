//! What the filter learns from the provider and checks about it: the discovery document
//! (OpenID Connect Discovery 1.0), the token endpoint's answers (RFC 6749 5.1) and the ID token
//! (OpenID Connect Core 3.1.3.7), verified with the JWKS through `tollgate-jose`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_jose::keys::{self, Key};
use tollgate_jose::token::{self, ClaimRules};

use crate::url::Url;

/// Largest ID token accepted, bytes.
pub const MAX_ID_TOKEN: usize = 16 * 1024;

/// The parts of the discovery document the filter uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Must be the configured issuer, exactly.
    pub issuer: String,
    /// Where browsers are sent to log in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// RP-initiated logout, when the provider offers it.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// PKCE methods; when listed, `S256` must be among them.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// Parses and checks a discovery document for `issuer`.
pub fn discovery(issuer: &str, body: &[u8]) -> Result<Discovery, String> {
    let doc: Discovery =
        serde_json::from_slice(body).map_err(|e| format!("discovery document: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "discovery names issuer {:?}, not the configured {issuer:?}",
            doc.issuer
        ));
    }
    let origin = Url::parse(issuer).map(|u| u.origin());
    for (field, value) in [
        ("token_endpoint", &doc.token_endpoint),
        ("jwks_uri", &doc.jwks_uri),
    ] {
        // Back-channel calls go through the issuer's cluster: same origin only.
        if Url::parse(value).map(|u| u.origin()) != origin {
            return Err(format!("{field} {value:?} is not on the issuer's origin"));
        }
    }
    for (field, value) in [
        ("authorization_endpoint", Some(&doc.authorization_endpoint)),
        ("end_session_endpoint", doc.end_session_endpoint.as_ref()),
    ] {
        if let Some(value) = value
            && Url::parse(value).is_none()
        {
            return Err(format!("{field} {value:?} is not an http(s) URL"));
        }
    }
    if let Some(methods) = &doc.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err("the provider does not support PKCE S256".into());
    }
    Ok(doc)
}

/// The public signing keys of a JWKS (symmetric keys dropped: a published secret is no key).
pub fn jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS: {e}"))?;
    let parsed = keys::parse_jwks(&value).map_err(|e| format!("JWKS: {e}"))?;
    Ok(keys::without_secrets(parsed).0)
}

/// A successful token endpoint answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    /// The access token (not forwarded; its lifetime drives refreshes).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// The ID token (required on the code exchange; optional on refresh).
    #[serde(default)]
    pub id_token: Option<String>,
    /// For refreshes, when the provider gives one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Access token lifetime, seconds.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Parses a token endpoint answer (`status` and body).
pub fn tokens(status: u16, body: &[u8]) -> Result<Tokens, String> {
    if status != 200 {
        let error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        return Err(format!("token endpoint answered {status} {error}"));
    }
    let tokens: Tokens = serde_json::from_slice(body).map_err(|e| format!("token answer: {e}"))?;
    if !tokens.token_type.eq_ignore_ascii_case("bearer") {
        return Err(format!("token_type {:?} is not Bearer", tokens.token_type));
    }
    Ok(tokens)
}

/// What the ID token must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenRules<'a> {
    /// The configured issuer.
    pub issuer: &'a str,
    /// The filter's client id (the audience).
    pub client_id: &'a str,
    /// The nonce sent with the authorization request; `None` on refresh (not required then).
    pub nonce: Option<&'a str>,
    /// Now, seconds since the epoch.
    pub now: u64,
    /// Clock skew, seconds.
    pub skew: u64,
}

/// Verifies an ID token: a supported asymmetric `alg` with a JWKS key (so never `none`, never
/// an HMAC keyed with a public key), the signature, `iss`, `aud` (and `azp` when there are
/// several audiences), `exp`/`nbf`, `nonce`, and a string `sub`. Returns its claims.
pub fn verify_id_token(
    id_token: &str,
    keys: &[Key],
    rules: &IdTokenRules<'_>,
) -> Result<Map<String, Value>, String> {
    let parsed = token::parse(id_token, MAX_ID_TOKEN).map_err(|e| e.to_string())?;
    parsed.verify_signature(keys).map_err(|e| e.to_string())?;
    let audiences = [rules.client_id.to_string()];
    token::check_claims(
        &parsed.claims,
        &ClaimRules {
            issuer: Some(rules.issuer),
            audiences: &audiences,
            now: rules.now,
            skew: rules.skew,
            require_exp: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let claims = parsed.claims;
    if let Some(Value::Array(auds)) = claims.get("aud")
        && auds.len() > 1
        && claims.get("azp").and_then(Value::as_str) != Some(rules.client_id)
    {
        return Err("several audiences and `azp` is not this client".into());
    }
    if let Some(nonce) = rules.nonce {
        let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !crate::same(got.as_bytes(), nonce.as_bytes()) {
            return Err("nonce does not match the login's".into());
        }
    }
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => Ok(claims),
        _ => Err("no `sub`".into()),
    }
}
