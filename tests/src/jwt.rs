//! Test JWT issuer: keys generated at test time (never committed), their JWKS, and tokens signed
//! with every algorithm `jwt-auth` accepts, plus the forged ones it must refuse.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::UnwrapErr;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2_next::{Sha256, Sha384, Sha512};

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("getrandom: {e}"))?;
    Ok(bytes)
}

/// A fresh RSA private key (2048 bits), from the OS's randomness.
pub fn rsa_key() -> Result<rsa::PrivateKey> {
    rsa::PrivateKey::new(&mut UnwrapErr(getrandom::SysRng), 2048).context("RSA key generation")
}

enum Secret {
    Rsa(rsa::PrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Hmac(Vec<u8>),
}

/// A signing key with its `kid` and algorithm.
pub struct Issuer {
    /// `kid` in tokens and in the JWK.
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: &'static str,
    secret: Secret,
}

impl Issuer {
    /// RS256/RS384/RS512/PS256 with `key`.
    pub fn rsa(kid: &str, alg: &'static str, key: &rsa::PrivateKey) -> Issuer {
        Issuer {
            kid: kid.into(),
            alg,
            secret: Secret::Rsa(key.clone()),
        }
    }

    /// ES256 with a fresh P-256 key.
    pub fn es256(kid: &str) -> Result<Issuer> {
        let key = p256::ecdsa::SigningKey::from_slice(&random_bytes::<32>()?)
            .map_err(|e| anyhow!("P-256 key: {e}"))?;
        Ok(Issuer {
            kid: kid.into(),
            alg: "ES256",
            secret: Secret::P256(key),
        })
    }

    /// ES384 with a fresh P-384 key.
    pub fn es384(kid: &str) -> Result<Issuer> {
        let key = p384::ecdsa::SigningKey::from_slice(&random_bytes::<48>()?)
            .map_err(|e| anyhow!("P-384 key: {e}"))?;
        Ok(Issuer {
            kid: kid.into(),
            alg: "ES384",
            secret: Secret::P384(key),
        })
    }

    /// EdDSA with a fresh Ed25519 key.
    pub fn eddsa(kid: &str) -> Result<Issuer> {
        Ok(Issuer {
            kid: kid.into(),
            alg: "EdDSA",
            secret: Secret::Ed25519(ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>()?)),
        })
    }

    /// HS256 with a fresh 32-byte secret.
    pub fn hs256(kid: &str) -> Result<Issuer> {
        Ok(Issuer {
            kid: kid.into(),
            alg: "HS256",
            secret: Secret::Hmac(random_bytes::<32>()?.to_vec()),
        })
    }

    /// The public JWK (the secret itself for HS256).
    pub fn jwk(&self) -> Value {
        match &self.secret {
            Secret::Rsa(key) => {
                let public = key.to_public_key();
                json!({"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                       "n": b64(&public.n_bytes()), "e": b64(&public.e_bytes())})
            }
            Secret::P256(key) => {
                let point = key.verifying_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": self.alg,
                       "x": b64(&bytes[1..33]), "y": b64(&bytes[33..65])})
            }
            Secret::P384(key) => {
                let point = key.verifying_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                json!({"kty": "EC", "crv": "P-384", "kid": self.kid, "alg": self.alg,
                       "x": b64(&bytes[1..49]), "y": b64(&bytes[49..97])})
            }
            Secret::Ed25519(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": self.alg,
                       "x": b64(key.verifying_key().as_bytes())})
            }
            Secret::Hmac(secret) => {
                json!({"kty": "oct", "kid": self.kid, "alg": self.alg, "k": b64(secret)})
            }
        }
    }

    /// The RSA public key as raw bytes of its JWK `n` (for the HS/RS confusion attack).
    pub fn public_key_bytes(&self) -> Vec<u8> {
        self.jwk().to_string().into_bytes()
    }

    /// The signature of `input` with this key.
    pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        match &self.secret {
            Secret::Rsa(key) => match self.alg {
                "RS384" => rsa::pkcs1v15::SigningKey::<Sha384>::new(key.clone())
                    .sign(input)
                    .to_vec(),
                "RS512" => rsa::pkcs1v15::SigningKey::<Sha512>::new(key.clone())
                    .sign(input)
                    .to_vec(),
                "PS256" => rsa::pss::SigningKey::<Sha256>::new(key.clone())
                    .sign_with_rng(&mut UnwrapErr(getrandom::SysRng), input)
                    .to_vec(),
                _ => rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone())
                    .sign(input)
                    .to_vec(),
            },
            Secret::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(input);
                sig.to_bytes().to_vec()
            }
            Secret::P384(key) => {
                let sig: p384::ecdsa::Signature = key.sign(input);
                sig.to_bytes().to_vec()
            }
            Secret::Ed25519(key) => {
                use ed25519_dalek::Signer;
                key.sign(input).to_bytes().to_vec()
            }
            Secret::Hmac(secret) => hmac_sha256(secret, input),
        }
    }

    /// A token with `claims`, signed by this key.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg, "typ": "JWT", "kid": self.kid});
        self.token_with_header(&header, claims)
    }

    /// A token with this exact header and `claims`, signed by this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }
}

/// HMAC-SHA256 of `input` keyed with `secret` (also used to forge HS256 tokens with an RSA
/// public key as the "secret").
pub fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    match hmac::Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// `{"keys": [...]}` with each issuer's JWK.
pub fn jwks(issuers: &[&Issuer]) -> Value {
    json!({"keys": issuers.iter().map(|i| i.jwk()).collect::<Vec<_>>()})
}

/// Standard claims valid now for `iss` and `aud`.
pub fn claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({"iss": iss, "aud": aud, "sub": "user-42", "iat": now, "nbf": now - 10, "exp": now + 600})
}

/// Replaces the payload of `token` (keeping its header and signature).
pub fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let _ = parts.next();
    let signature = parts.next().unwrap_or_default();
    format!(
        "{header}.{}.{signature}",
        b64(claims.to_string().as_bytes())
    )
}

/// An unsigned `alg: none` token.
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token whose HMAC key is `secret` (e.g. the RSA public key material), naming `kid`.
pub fn forged_hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64(&signature))
}
