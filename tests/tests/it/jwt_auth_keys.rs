//! `tollgate-jose`'s verification as the wasm module runs it (wasmtime, with the SIMD128 rows
//! of the RSA arithmetic that the native unit tests cannot run): RSA keys of every shape the
//! 28-bit code handles (odd and even limb counts, up to its 3,360-bit limit) and beyond it (the
//! 32-bit code), and several Ed25519 keys (each its own fixed-base table). Every valid token
//! goes upstream, every tampered one is answered 401.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::jwt::{self, Issuer, b64};
use tollgate_tests::{client, paths};
use tollgate_traffic::{Exchange, HttpRequest, Traffic};

const FILTER: &str = "jwt-auth";
/// The harness clock at the first exchange (2024-01-01T00:00:00Z).
const NOW: u64 = 1_704_067_200;

fn request_with(token: &str) -> HttpRequest {
    client::request(
        "GET",
        "api.example.com",
        "/v1/orders",
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    )
}

/// The signing input of a token for `issuer` with `claims`.
fn signing_input(issuer: &Issuer, claims: &Value) -> String {
    let header = json!({"alg": issuer.alg, "typ": "JWT", "kid": issuer.kid});
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A valid token and tampered ones (a bit flipped at the signature's start and end, the
/// signature of other claims), each named.
fn tokens(issuer: &Issuer) -> Vec<(String, bool, String)> {
    let claims = |sub: &str| {
        json!({"iss": "https://idp.example.com", "aud": "shop-api", "sub": sub,
               "iat": NOW, "nbf": NOW - 5, "exp": NOW + 600})
    };
    let input = signing_input(issuer, &claims("user-42"));
    let signature = issuer.sign_bytes(input.as_bytes());
    let mut out = vec![(
        format!("{} valid", issuer.kid),
        true,
        format!("{input}.{}", b64(&signature)),
    )];
    let last = signature.len() - 1;
    for (what, at, bit) in [
        ("first bit", 0, 0x80u8),
        ("last bit", last, 1),
        ("a middle bit", last / 2, 0x10),
    ] {
        let mut forged = signature.clone();
        forged[at] ^= bit;
        out.push((
            format!("{} {what} flipped", issuer.kid),
            false,
            format!("{input}.{}", b64(&forged)),
        ));
    }
    let other = signing_input(issuer, &claims("admin"));
    out.push((
        format!("{} another payload's signature", issuer.kid),
        false,
        format!("{other}.{}", b64(&signature)),
    ));
    out
}

#[test]
fn harness_verifies_rsa_and_ed25519_keys_of_every_shape() -> Result<()> {
    let mut issuers = Vec::new();
    // 28-bit limbs: 2048 bits is 74 limbs, 2088 is 75 (odd: a last row on its own), 3072 is
    // 110, 3360 the limit (120); 3368 and 4096 bits take the 32-bit code. (Keys under 2048
    // bits are refused by the JWKS parse.)
    for bits in [2048usize, 2088, 3072, 3360, 3368, 4096] {
        let key = rsa::PrivateKey::new(&mut rand_core::UnwrapErr(getrandom::SysRng), bits)
            .with_context(|| format!("RSA key of {bits} bits"))?;
        issuers.push(Issuer::rsa(&format!("rs256-{bits}"), "RS256", &key));
    }
    for i in 0..4 {
        issuers.push(Issuer::eddsa(&format!("eddsa-{i}"))?);
    }
    let cases: Vec<(String, bool, String)> = issuers.iter().flat_map(tokens).collect();
    let exchanges = cases
        .iter()
        .enumerate()
        .map(|(i, (_, _, token))| Exchange {
            id: format!("request {i}"),
            request: request_with(token),
            response: Some(tollgate_tests::upstream::text_response(b"orders")),
            details: Default::default(),
        })
        .collect();
    let jwks = jwt::jwks(&issuers.iter().collect::<Vec<_>>());
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(Traffic {
            source: None,
            exchanges,
            warnings: Vec::new(),
        })
        .http_call_stub(HttpCallStub {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: jwks.to_string().into_bytes(),
        })
        .run()?;
    ensure!(report.exchanges.len() == cases.len());
    for ((name, valid, _), exchange) in cases.iter().zip(&report.exchanges) {
        if *valid {
            ensure!(
                exchange.upstream_request.is_some(),
                "{name}: refused: {:?}",
                exchange.verdict
            );
        } else {
            ensure!(
                exchange.verdict == Verdict::AnsweredLocally { status: 401 }
                    && exchange.upstream_request.is_none(),
                "{name}: not refused with 401: {:?}",
                exchange.verdict
            );
        }
    }
    Ok(())
}
