//! Temporary: per-algorithm harness cost (removed after measuring).
use anyhow::Result;
use serde_json::json;
use tollgate_harness::host::HttpCallStub;
use tollgate_harness::replay::Replay;
use tollgate_harness::traffic::{Exchange, HttpResponse, Traffic};
use tollgate_tests::{client, jwt, paths};
#[test]
fn cost_per_alg() -> Result<()> {
    let rsa = jwt::rsa_key()?;
    let all = vec![
        jwt::Issuer::rsa("rs256", "RS256", &rsa), jwt::Issuer::rsa("rs384", "RS384", &rsa),
        jwt::Issuer::rsa("rs512", "RS512", &rsa), jwt::Issuer::rsa("ps256", "PS256", &rsa),
        jwt::Issuer::es256("es256")?, jwt::Issuer::es384("es384")?, jwt::Issuer::eddsa("eddsa")?, jwt::Issuer::hs256("hs256")?,
    ];
    let jwks = jwt::jwks(&all.iter().collect::<Vec<_>>());
    let now = 1_704_067_200u64;
    for i in &all {
        let token = i.token(&json!({"iss": "https://idp.example.com", "aud": "shop-api", "sub": "u", "exp": now + 600}));
        let exchanges = (0..200).map(|n| Exchange { id: format!("{n}"), request: client::request("GET", "a", "/", &[("authorization", &format!("Bearer {token}"))], b""), response: Some(HttpResponse { status: 200, headers: vec![], body: vec![] }), details: Default::default() }).collect();
        let report = Replay::filter(paths::filter_wasm("jwt-auth")?).config(paths::demo_config("jwt-auth")?)
            .traffic(Traffic { source: None, exchanges, warnings: vec![] })
            .http_call_stub(HttpCallStub { headers: vec![(":status".into(), "200".into())], body: jwks.to_string().into_bytes() }).run()?;
        let s = report.summary();
        println!("COST {} passed/modified {} p50 {:?} p99 {:?}", i.alg, s.passed + s.modified, s.p50, s.p99);
    }
    Ok(())
}
