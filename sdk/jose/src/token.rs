//! Compact JWS tokens (RFC 7515/7519): strict parsing, signature verification against a key set
//! and the registered claims (`iss`, `aud`, `exp`, `nbf`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::keys::{Alg, Key, Material};

/// Why a token is refused. The message goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than the configured limit.
    #[error("token of {len} bytes is longer than {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none` or not supported.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No key with this `kid` fits the algorithm.
    #[error("no key fits kid {kid:?} and alg {alg}")]
    NoKey {
        /// The token's `kid`.
        kid: Option<String>,
        /// The token's `alg`.
        alg: &'static str,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is missing or not the provider's.
    #[error("issuer {0:?} not accepted")]
    Issuer(Option<String>),
    /// No `aud` value is accepted.
    #[error("audience not accepted")]
    Audience,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not valid yet")]
    NotYetValid,
    /// A time claim is not a number.
    #[error("claim `{0}` is not a number")]
    BadTimeClaim(&'static str),
}

/// A token split and decoded, not verified yet.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The signature algorithm.
    pub alg: Alg,
    /// `kid` from the header.
    pub kid: Option<String>,
    /// The claims.
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

fn decode_part(what: &str, part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|err| TokenError::Malformed(format!("{what} is not base64url: {err}")))
}

fn json_object(what: &str, bytes: &[u8]) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
        Err(err) => Err(TokenError::Malformed(format!("{what} is not JSON: {err}"))),
    }
}

/// Splits and decodes `token` (at most `max_len` bytes).
pub fn parse(token: &str, max_len: usize) -> Result<Parsed, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: max_len,
        });
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let header_json = json_object("header", &decode_part("header", header)?)?;
    let alg_name = header_json
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("header has no string `alg`".into()))?;
    let alg = Alg::parse(alg_name).ok_or_else(|| TokenError::Algorithm(alg_name.to_string()))?;
    // Critical extensions we do not implement make the token unusable (RFC 7515 4.1.11).
    if header_json.contains_key("crit") {
        return Err(TokenError::Malformed("unsupported `crit` header".into()));
    }
    let kid = match header_json.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed("`kid` is not a string".into())),
    };
    let claims = json_object("payload", &decode_part("payload", payload)?)?;
    let signature = decode_part("signature", signature)?;
    Ok(Parsed {
        alg,
        kid,
        claims,
        signing_input: format!("{header}.{payload}"),
        signature,
    })
}

impl Parsed {
    /// True when some key in `keys` fits this token's `kid` and `alg`.
    pub fn has_candidate(&self, keys: &[Key]) -> bool {
        self.candidates(keys).next().is_some()
    }

    fn candidates<'k>(&self, keys: &'k [Key]) -> impl Iterator<Item = &'k Key> {
        let kid = self.kid.clone();
        let alg = self.alg;
        keys.iter().filter(move |key| {
            key.fits(alg)
                && match (&kid, &key.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) | (None, _) => true,
                }
        })
    }

    /// Verifies the signature with a fitting key from `keys`.
    pub fn verify_signature(&self, keys: &[Key]) -> Result<(), TokenError> {
        let mut tried = false;
        for key in self.candidates(keys) {
            tried = true;
            if verify_with(
                self.alg,
                &key.material,
                self.signing_input.as_bytes(),
                &self.signature,
            ) {
                return Ok(());
            }
        }
        if tried {
            Err(TokenError::Signature)
        } else {
            Err(TokenError::NoKey {
                kid: self.kid.clone(),
                alg: self.alg.name(),
            })
        }
    }
}

fn verify_with(alg: Alg, material: &Material, msg: &[u8], sig: &[u8]) -> bool {
    use rsa::signature::Verifier;
    use sha2_next::{Sha256, Sha384, Sha512};
    match (alg, material) {
        (Alg::Rs256 | Alg::Rs384 | Alg::Rs512, Material::Rsa(key)) => {
            // The key's precomputed form (crate::rsa_public): keys are parsed once per JWKS.
            use crate::rsa_public::{SHA256_PREFIX, SHA384_PREFIX, SHA512_PREFIX};
            use sha2_next::Digest;
            match alg {
                Alg::Rs256 => key
                    .fast
                    .verify_pkcs1v15(&SHA256_PREFIX, &Sha256::digest(msg), sig),
                Alg::Rs384 => key
                    .fast
                    .verify_pkcs1v15(&SHA384_PREFIX, &Sha384::digest(msg), sig),
                _ => key
                    .fast
                    .verify_pkcs1v15(&SHA512_PREFIX, &Sha512::digest(msg), sig),
            }
        }
        (Alg::Ps256, Material::Rsa(key)) => {
            let Ok(signature) = rsa::pss::Signature::try_from(sig) else {
                return false;
            };
            rsa::pss::VerifyingKey::<Sha256>::new(key.key.clone())
                .verify(msg, &signature)
                .is_ok()
        }
        // JWS ECDSA signatures are the fixed-size r || s (not DER).
        (Alg::Es256, Material::P256(key)) => key.verify(msg, sig),
        (Alg::Es384, Material::P384(key)) => key.verify(msg, sig),
        (Alg::EdDsa, Material::Ed25519(key)) => key.verify(msg, sig),
        (Alg::Hs256, Material::Hmac(secret)) => {
            use hmac::{KeyInit, Mac};
            let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            mac.update(msg);
            // Constant-time comparison.
            mac.verify_slice(sig).is_ok()
        }
        _ => false,
    }
}

/// What the registered claims must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    /// Required `iss`, when set.
    pub issuer: Option<&'a str>,
    /// Accepted `aud` values; any when empty.
    pub audiences: &'a [String],
    /// Now, seconds since the Unix epoch.
    pub now: u64,
    /// Tolerated clock difference, seconds.
    pub skew: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
}

fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or(TokenError::BadTimeClaim(name)),
    }
}

/// Checks `iss`, `aud`, `exp` and `nbf`.
pub fn check_claims(claims: &Map<String, Value>, rules: &ClaimRules<'_>) -> Result<(), TokenError> {
    if let Some(issuer) = rules.issuer {
        let iss = claims.get("iss").and_then(Value::as_str);
        if iss != Some(issuer) {
            return Err(TokenError::Issuer(iss.map(str::to_string)));
        }
    }
    if !rules.audiences.is_empty() {
        let accepted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| rules.audiences.iter().any(|want| want == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(accepted),
            Some(single) => accepted(single),
            None => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    let now = rules.now as f64;
    let skew = rules.skew as f64;
    match time_claim(claims, "exp")? {
        Some(exp) if now >= exp + skew => return Err(TokenError::Expired),
        None if rules.require_exp => return Err(TokenError::BadTimeClaim("exp")),
        _ => {}
    }
    if let Some(nbf) = time_claim(claims, "nbf")?
        && now + skew < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}
