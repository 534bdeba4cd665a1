//! The real OpenID provider of the identity filters' tests: npm's `oidc-provider`
//! (installed by `cargo xtask oidc-provider` into `target/oidc-provider`), run with Node as
//! `tests/oidc-provider/server.cjs` on 127.0.0.1 and stopped when the guard drops.
//!
//! Its clients and user are described at the top of `server.cjs`. Missing Node or a missing
//! install is a failure naming the command that provides it, never a skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::paths;

/// How long the provider may take to print its issuer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The web client the `oidc` filter uses (a loopback native client: any 127.0.0.1 port).
pub const WEB_CLIENT: (&str, &str) = ("tollgate-web", "tollgate-web-secret");
/// The client the `oauth2-introspection` filter authenticates as.
pub const GATEWAY_CLIENT: (&str, &str) = ("tollgate-gateway", "tollgate-gateway-secret");
/// A machine client that obtains access tokens with `client_credentials`.
pub const SERVICE_CLIENT: (&str, &str) = ("tollgate-service", "tollgate-service-secret");
/// The resource (audience) the service client's access tokens are for.
pub const API_AUDIENCE: &str = "https://api.tollgate.test";
/// The test user's login.
pub const USER: &str = "alice";

/// Lifetimes the provider is started with (seconds).
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Access token lifetime.
    pub access_token_ttl: u32,
    /// ID token lifetime.
    pub id_token_ttl: u32,
    /// One more post-logout redirect URI registered for the web client (matched exactly by
    /// the provider, so it carries the relying party's port).
    pub post_logout_redirect_uri: Option<String>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            access_token_ttl: 300,
            id_token_ttl: 300,
            post_logout_redirect_uri: None,
        }
    }
}

/// `TOLLGATE_OIDC_PROVIDER_DIR`, else `<root>/target/oidc-provider`, which must hold the install.
pub fn install_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("TOLLGATE_OIDC_PROVIDER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => paths::root().join("target").join("oidc-provider"),
    };
    if !dir.join("node_modules").join("oidc-provider").is_dir() {
        bail!(
            "the OpenID provider is not installed in {}; run `cargo xtask oidc-provider` (or `cargo xtask test`)",
            dir.display()
        );
    }
    Ok(dir)
}

/// A running provider; killed on drop.
pub struct Provider {
    child: Child,
    issuer: String,
    addr: SocketAddr,
    log: PathBuf,
}

impl Provider {
    /// Starts a provider with default lifetimes.
    pub fn start() -> Result<Provider> {
        Provider::start_with(ProviderOptions::default())
    }

    /// Starts a provider and waits for its issuer line.
    pub fn start_with(options: ProviderOptions) -> Result<Provider> {
        let install = install_dir()?;
        let script = paths::root()
            .join("tests")
            .join("oidc-provider")
            .join("server.cjs");
        let log = paths::work_dir()?.join(format!("oidc-provider-{}.log", std::process::id()));
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("could not create {}", log.display()))?;
        let mut child = Command::new(std::env::var_os("NODE_BIN").unwrap_or_else(|| "node".into()))
            .arg(&script)
            .env("NODE_PATH", install.join("node_modules"))
            .env("TOLLGATE_OIDC_ACCESS_TTL", options.access_token_ttl.to_string())
            .env("TOLLGATE_OIDC_ID_TTL", options.id_token_ttl.to_string())
            .env(
                "TOLLGATE_OIDC_POST_LOGOUT",
                options.post_logout_redirect_uri.unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("could not start `node` (Node.js 18 or later runs the OpenID provider; NODE_BIN overrides)")?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("the provider's stdout was not captured");
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("the OpenID provider did not start ({other:?}); its log:\n{text}");
            }
        };
        let parsed: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the provider printed {line:?}, not its issuer"))?;
        let issuer = parsed["issuer"]
            .as_str()
            .context("the provider's first line has no issuer")?
            .to_string();
        let addr: SocketAddr = issuer
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("issuer {issuer} is not http://<ip>:<port>"))?;
        Ok(Provider {
            child,
            issuer,
            addr,
            log,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drives the provider's development login and consent pages from `authorize_url` (an
/// authorization request, or a page of the protected site that redirects to one) as `user`,
/// following redirects until one goes to a URL starting with `stop_at` (the relying party's
/// callback): returns that URL. Any page other than the login and consent forms is an error
/// carrying the page.
pub fn log_in(
    browser: &mut crate::browser::Browser,
    authorize_url: &str,
    user: &str,
    stop_at: &str,
) -> Result<String> {
    let stop = |url: &str| !url.starts_with(stop_at);
    let (mut url, mut page) = browser.navigate(authorize_url, stop)?;
    for _ in 0..4 {
        if url.starts_with(stop_at) {
            return Ok(url);
        }
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let Some(action) = crate::browser::form_action(&html) else {
            bail!("{url} answered {} with no form: {html}", page.status);
        };
        (url, page) = if html.contains("name=\"prompt\" value=\"login\"") {
            browser.submit(
                &action,
                &[("prompt", "login"), ("login", user), ("password", "any")],
                stop,
            )?
        } else if html.contains("name=\"prompt\" value=\"consent\"") {
            browser.submit(&action, &[("prompt", "consent")], stop)?
        } else {
            bail!("{url}: a form that is neither login nor consent: {html}");
        };
    }
    bail!("still not redirected to {stop_at} after logging in and consenting (at {url})")
}
