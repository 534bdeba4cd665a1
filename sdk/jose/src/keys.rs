//! JSON Web Keys (RFC 7517): a JWKS document parsed into verification keys, each tied to the
//! algorithms it may verify, so that a key of one kind is never used for another (an RSA public
//! key is never an HMAC secret).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 8192;

/// A signature algorithm (`alg` in the JWT header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// HMAC with SHA-256.
    Hs256,
}

impl Alg {
    /// The algorithm named `name`; `None` for unsupported ones (including `none`).
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            _ => return None,
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
        }
    }
}

/// An RSA public key: the `rsa` crate's (PS256) and the same key with its Montgomery
/// constants precomputed for PKCS#1 v1.5 (RS256/384/512, [`crate::rsa_public`]).
#[derive(Clone)]
pub struct RsaPublic {
    /// The key as the `rsa` crate holds it.
    pub key: rsa::PublicKey,
    /// The key with what each verification needs computed once.
    pub fast: crate::rsa_public::RsaKey,
}

/// The key material, by kind.
#[derive(Clone)]
pub enum Material {
    /// RSA public key (RS*, PS*).
    Rsa(Box<RsaPublic>),
    /// P-256 public key (ES256), with its table ([`crate::ec`]).
    P256(crate::ec::P256Key),
    /// P-384 public key (ES384), with its table ([`crate::ec`]).
    P384(crate::ec::P384Key),
    /// Ed25519 public key (EdDSA), with its table ([`crate::ed25519`]).
    Ed25519(crate::ed25519::VerifyingKey),
    /// Shared secret (HS256).
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            Material::Rsa(_) => "RSA",
            Material::P256(_) => "EC P-256",
            Material::P384(_) => "EC P-384",
            Material::Ed25519(_) => "OKP Ed25519",
            Material::Hmac(_) => "oct",
        })
    }
}

/// One verification key.
#[derive(Debug, Clone)]
pub struct Key {
    /// `kid`, when the JWK has one.
    pub kid: Option<String>,
    /// `alg`, when the JWK pins one.
    pub alg: Option<Alg>,
    /// The key itself.
    pub material: Material,
}

impl Key {
    /// True when this key may verify a token signed with `alg`: the key kind must fit the
    /// algorithm family, and a key that pins an `alg` only verifies that one.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|pinned| pinned != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (
                Material::Rsa(_),
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256
            ) | (Material::P256(_), Alg::Es256)
                | (Material::P384(_), Alg::Es384)
                | (Material::Ed25519(_), Alg::EdDsa)
                | (Material::Hmac(_), Alg::Hs256)
        )
    }
}

/// `keys` without the symmetric (`oct`) secrets, and how many were dropped.
///
/// A fetched JWKS is public: an HMAC secret found there is either a leak or an attacker's key.
pub fn without_secrets(keys: Vec<Key>) -> (Vec<Key>, usize) {
    let before = keys.len();
    let public: Vec<Key> = keys
        .into_iter()
        .filter(|k| !matches!(k.material, Material::Hmac(_)))
        .collect();
    let dropped = before - public.len();
    (public, dropped)
}

/// Why a JWKS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Document(String),
    /// One key is unusable.
    #[error("keys[{index}]{kid}: {message}")]
    Key {
        /// Position in `keys`.
        index: usize,
        /// ` (kid "...")` or empty.
        kid: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    k: Option<String>,
}

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD.decode(value).map_err(|err| {
        // Without the decoder's message: it quotes a byte of the value (maybe a secret).
        let at = match err {
            base64::DecodeError::InvalidByte(offset, _)
            | base64::DecodeError::InvalidLastSymbol { offset, .. } => {
                format!(" (bad character at offset {offset})")
            }
            base64::DecodeError::InvalidLength(len) => format!(" (length {len})"),
            base64::DecodeError::InvalidPadding => " (padding)".to_string(),
        };
        format!("`{field}` is not base64url{at}")
    })
}

/// Parses a JWKS document (`{"keys": [...]}`). Keys of unknown types or for encryption
/// (`"use": "enc"`) are skipped; a key of a known type that is broken is an error naming it.
pub fn parse_jwks(value: &serde_json::Value) -> Result<Vec<Key>, JwksError> {
    let doc: Document = serde_json::from_value(value.clone())
        .map_err(|err| JwksError::Document(err.to_string()))?;
    let mut keys = Vec::new();
    for (index, raw) in doc.keys.into_iter().enumerate() {
        let jwk: Jwk = serde_json::from_value(raw).map_err(|err| JwksError::Key {
            index,
            kid: String::new(),
            message: err.to_string(),
        })?;
        let kid_label = jwk
            .kid
            .as_ref()
            .map(|k| format!(" (kid {k:?})"))
            .unwrap_or_default();
        let err = |message: String| JwksError::Key {
            index,
            kid: kid_label.clone(),
            message,
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let alg = match &jwk.alg {
            None => None,
            Some(name) => {
                Some(Alg::parse(name).ok_or_else(|| err(format!("unsupported alg {name:?}")))?)
            }
        };
        let material = match jwk.kty.as_str() {
            "RSA" => {
                let n = b64("n", jwk.n.as_ref()).map_err(&err)?;
                let e = b64("e", jwk.e.as_ref()).map_err(&err)?;
                let fast = crate::rsa_public::RsaKey::new(&n, &e)
                    .ok_or_else(|| err("bad RSA key: even modulus or exponent".into()))?;
                let n = rsa::BoxedUint::from_be_slice_vartime(&n);
                let e = rsa::BoxedUint::from_be_slice_vartime(&e);
                let bits = n.bit_width_vartime() as usize;
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(err(format!(
                        "RSA modulus of {bits} bits (accepted: {MIN_RSA_BITS}..={MAX_RSA_BITS})"
                    )));
                }
                let key = rsa::PublicKey::new_with_size_limits(n, e, MIN_RSA_BITS..=MAX_RSA_BITS)
                    .map_err(|e| err(format!("bad RSA key: {e}")))?;
                Material::Rsa(Box::new(RsaPublic { key, fast }))
            }
            "EC" => {
                let x = b64("x", jwk.x.as_ref()).map_err(&err)?;
                let y = b64("y", jwk.y.as_ref()).map_err(&err)?;
                match jwk.crv.as_deref() {
                    Some("P-256") if x.len() == 32 && y.len() == 32 => Material::P256(
                        crate::ec::P256Key::from_coordinates(&x, &y)
                            .ok_or_else(|| err("not a point on P-256".into()))?,
                    ),
                    Some("P-384") if x.len() == 48 && y.len() == 48 => Material::P384(
                        crate::ec::P384Key::from_coordinates(&x, &y)
                            .ok_or_else(|| err("not a point on P-384".into()))?,
                    ),
                    Some("P-256" | "P-384") => {
                        return Err(err("coordinates of the wrong length".into()));
                    }
                    other => return Err(err(format!("unsupported EC curve {other:?}"))),
                }
            }
            "OKP" => {
                if jwk.crv.as_deref() != Some("Ed25519") {
                    return Err(err(format!("unsupported OKP curve {:?}", jwk.crv)));
                }
                let x = b64("x", jwk.x.as_ref()).map_err(&err)?;
                let bytes: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| err("Ed25519 `x` must be 32 bytes".into()))?;
                Material::Ed25519(
                    crate::ed25519::VerifyingKey::from_bytes(&bytes)
                        .ok_or_else(|| err("not an Ed25519 public key".into()))?,
                )
            }
            "oct" => {
                let k = b64("k", jwk.k.as_ref()).map_err(&err)?;
                if k.len() < 32 {
                    return Err(err(format!(
                        "HMAC secret of {} bytes; HS256 needs at least 32",
                        k.len()
                    )));
                }
                Material::Hmac(k)
            }
            _ => continue,
        };
        keys.push(Key {
            kid: jwk.kid,
            alg,
            material,
        });
    }
    Ok(keys)
}
