//! Stored password hashes (`{SHA}` and `{SSHA256}`), verified in constant time, and the parsing
//! of an `Authorization: Basic ...` header into user and password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The longest `Authorization` value accepted (longer ones are refused as malformed before any
/// decoding).
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

/// Shortest salt accepted for `{SSHA256}`.
pub const MIN_SALT_LEN: usize = 8;

/// A stored password hash.
///
/// ```
/// use tollgate_basic_auth::credentials::PasswordHash;
/// // htpasswd -s: {SHA} + base64(sha1(password))
/// let sha: PasswordHash = "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=".parse()?;
/// assert!(sha.verify(b"test"));
/// assert!(!sha.verify(b"Test"));
/// # Ok::<(), tollgate_basic_auth::credentials::HashError>(())
/// ```
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum PasswordHash {
    /// `{SHA}base64(sha1(password))`: what `htpasswd -s` writes and Envoy's `basic_auth` reads.
    Sha1([u8; 20]),
    /// `{SSHA256}base64(sha256(password + salt) + salt)`: salted, at least 8 bytes of salt.
    SaltedSha256 {
        /// The digest.
        digest: [u8; 32],
        /// The salt appended to the password.
        salt: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes into logs.
        match self {
            PasswordHash::Sha1(_) => f.write_str("{SHA}<hidden>"),
            PasswordHash::SaltedSha256 { .. } => f.write_str("{SSHA256}<hidden>"),
        }
    }
}

/// A stored hash that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not `{SHA}` nor `{SSHA256}`.
    #[error(
        "unsupported hash format (expected {{SHA}}<base64> or {{SSHA256}}<base64>; plaintext passwords are not accepted)"
    )]
    UnknownScheme,
    /// The base64 part does not decode.
    #[error("the {scheme} value is not valid base64")]
    Base64 {
        /// `{SHA}` or `{SSHA256}`.
        scheme: &'static str,
    },
    /// Decoded, but the wrong length.
    #[error("the {scheme} value decodes to {got} bytes, expected {expected}")]
    Length {
        /// `{SHA}` or `{SSHA256}`.
        scheme: &'static str,
        /// Bytes decoded.
        got: usize,
        /// What was expected.
        expected: &'static str,
    },
}

impl std::str::FromStr for PasswordHash {
    type Err = HashError;

    fn from_str(text: &str) -> Result<Self, HashError> {
        if let Some(b64) = text.strip_prefix("{SHA}") {
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| HashError::Base64 { scheme: "{SHA}" })?;
            let digest: [u8; 20] = bytes.as_slice().try_into().map_err(|_| HashError::Length {
                scheme: "{SHA}",
                got: bytes.len(),
                expected: "20",
            })?;
            return Ok(PasswordHash::Sha1(digest));
        }
        if let Some(b64) = text.strip_prefix("{SSHA256}") {
            let bytes = STANDARD.decode(b64).map_err(|_| HashError::Base64 {
                scheme: "{SSHA256}",
            })?;
            if bytes.len() < 32 + MIN_SALT_LEN {
                return Err(HashError::Length {
                    scheme: "{SSHA256}",
                    got: bytes.len(),
                    expected: "at least 40 (32-byte digest, 8-byte salt)",
                });
            }
            let (digest, salt) = bytes.split_at(32);
            let mut d = [0u8; 32];
            d.copy_from_slice(digest);
            return Ok(PasswordHash::SaltedSha256 {
                digest: d,
                salt: salt.to_vec(),
            });
        }
        Err(HashError::UnknownScheme)
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = HashError;
    fn try_from(text: String) -> Result<Self, HashError> {
        text.parse()
    }
}

impl PasswordHash {
    /// Whether `password` hashes to this; the digest comparison is constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha1(expected) => {
                let got = Sha1::digest(password);
                bool::from(got.as_slice().ct_eq(expected))
            }
            PasswordHash::SaltedSha256 { digest, salt } => {
                let mut hasher = Sha256::new();
                hasher.update(password);
                hasher.update(salt);
                let got = hasher.finalize();
                bool::from(got.as_slice().ct_eq(digest))
            }
        }
    }
}

/// Why an `Authorization` header was not usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// No `Authorization` header.
    #[error("no credentials")]
    Missing,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    Duplicate,
    /// Longer than [`MAX_AUTHORIZATION_LEN`].
    #[error("Authorization header too long")]
    TooLong,
    /// Not the `Basic` scheme.
    #[error("not Basic credentials")]
    WrongScheme,
    /// The token is empty or not base64.
    #[error("credentials are not valid base64")]
    BadBase64,
    /// No `:` between user and password, or an empty user.
    #[error("credentials are not user:password")]
    NotUserPassword,
}

/// User and password from a Basic `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id (before the first `:`).
    pub user: String,
    /// The password bytes (after the first `:`).
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// Parses the values of every `Authorization` header of a request.
///
/// ```
/// use tollgate_basic_auth::credentials::{parse_authorization, CredentialsError};
/// let c = parse_authorization(&["basic YWRhOnMzY3JldA=="]).unwrap();
/// assert_eq!((c.user.as_str(), c.password.as_slice()), ("ada", &b"s3cret"[..]));
/// assert_eq!(parse_authorization(&[]), Err(CredentialsError::Missing));
/// assert_eq!(parse_authorization(&["Basic YWRh"]), Err(CredentialsError::NotUserPassword));
/// ```
pub fn parse_authorization(values: &[&str]) -> Result<Credentials, CredentialsError> {
    let value = match values {
        [] => return Err(CredentialsError::Missing),
        [one] => *one,
        _ => return Err(CredentialsError::Duplicate),
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(CredentialsError::TooLong);
    }
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(CredentialsError::Missing);
    }
    let (scheme, token) = value
        .split_once([' ', '\t'])
        .ok_or(CredentialsError::WrongScheme)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(CredentialsError::WrongScheme);
    }
    let token = token.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(CredentialsError::BadBase64);
    }
    let decoded = STANDARD
        .decode(token)
        .map_err(|_| CredentialsError::BadBase64)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(CredentialsError::NotUserPassword)?;
    let (user, password) = decoded.split_at(colon);
    if user.is_empty() {
        return Err(CredentialsError::NotUserPassword);
    }
    let user = String::from_utf8(user.to_vec()).map_err(|_| CredentialsError::NotUserPassword)?;
    Ok(Credentials {
        user,
        password: password.get(1..).unwrap_or_default().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn hashes_parse_and_verify() -> Result<(), HashError> {
        let sha: PasswordHash = "{SHA}H0WHlTkKgLwypOtQ16u+4XJYniY=".parse()?;
        assert!(sha.verify(b"demo-secret-do-not-use"));
        assert!(!sha.verify(b"demo-secret-do-not-us"));
        let ssha: PasswordHash =
            "{SSHA256}MmcrRDbi1SiNY45+Z6X05tnSsqCH1jyAWEKOqJT/YFF0b2xsZ2F0ZS1kZW1vLXNhbHQ="
                .parse()?;
        assert!(ssha.verify(b"demo-secret-do-not-use"));
        assert!(!ssha.verify(b""));
        Ok(())
    }

    #[test]
    fn bad_hashes_are_refused_with_a_reason() {
        let err = |s: &str| s.parse::<PasswordHash>().err();
        assert_eq!(err("secret"), Some(HashError::UnknownScheme));
        assert_eq!(err("{PLAIN}x"), Some(HashError::UnknownScheme));
        assert_eq!(err("{SHA}!!"), Some(HashError::Base64 { scheme: "{SHA}" }));
        assert!(matches!(
            err("{SHA}YWJj"),
            Some(HashError::Length { got: 3, .. })
        ));
        // 32-byte digest and a 4-byte salt: too short a salt.
        let short = format!("{{SSHA256}}{}", STANDARD.encode([0u8; 36]));
        assert!(matches!(
            err(&short),
            Some(HashError::Length { got: 36, .. })
        ));
    }

    #[test]
    fn debug_never_shows_secrets() -> Result<(), HashError> {
        let sha: PasswordHash = "{SHA}H0WHlTkKgLwypOtQ16u+4XJYniY=".parse()?;
        assert_eq!(format!("{sha:?}"), "{SHA}<hidden>");
        let c = Credentials {
            user: "a".into(),
            password: b"pw".to_vec(),
        };
        assert!(!format!("{c:?}").contains("pw"));
        Ok(())
    }

    #[test]
    fn authorization_edge_cases() {
        use CredentialsError::*;
        let token = b64("ada:pw");
        let one = |v: &str| parse_authorization(&[v]).map(|c| (c.user, c.password));
        assert_eq!(
            one(&format!("Basic {token}")),
            Ok(("ada".into(), b"pw".to_vec()))
        );
        assert_eq!(
            one(&format!("BASIC   {token}  ")),
            Ok(("ada".into(), b"pw".to_vec()))
        );
        assert_eq!(
            one(&format!("Basic {}", b64("ada:"))),
            Ok(("ada".into(), vec![]))
        );
        assert_eq!(
            one(&format!("Basic {}", b64("ada:p:w"))),
            Ok(("ada".into(), b"p:w".to_vec()))
        );
        assert_eq!(one(""), Err(Missing));
        assert_eq!(one("   "), Err(Missing));
        assert_eq!(one("Basic"), Err(WrongScheme));
        assert_eq!(one("Basic "), Err(WrongScheme));
        assert_eq!(one("Basic   \t"), Err(WrongScheme));
        assert_eq!(one(&format!("Bearer {token}")), Err(WrongScheme));
        assert_eq!(one(&format!("Basicx {token}")), Err(WrongScheme));
        assert_eq!(one("Basic !!!notbase64"), Err(BadBase64));
        assert_eq!(one("Basic YWRhOnB3"), Ok(("ada".into(), b"pw".to_vec())));
        assert_eq!(one("Basic YWRhOnB3=="), Err(BadBase64));
        assert_eq!(
            one(&format!("Basic {}", b64("adapw"))),
            Err(NotUserPassword)
        );
        assert_eq!(one(&format!("Basic {}", b64(":pw"))), Err(NotUserPassword));
        assert_eq!(
            one(&format!("Basic {}", STANDARD.encode(b"\xff:pw"))),
            Err(NotUserPassword)
        );
        assert_eq!(
            one(&format!("Basic {}", "A".repeat(MAX_AUTHORIZATION_LEN))),
            Err(TooLong)
        );
        assert_eq!(
            parse_authorization(&[&format!("Basic {token}"), &format!("Basic {token}")]),
            Err(Duplicate)
        );
    }
}
