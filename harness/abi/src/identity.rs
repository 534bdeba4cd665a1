//! Who a plugin is to Envoy: its `name`, `root_id`, `vm_config.vm_id` and the
//! VM's environment variables (`vm_config.environment_variables`). The guest
//! reads the first three as the properties `plugin_name`, `plugin_root_id`
//! and `plugin_vm_id`, the environment through WASI `environ_get`; shared
//! data and shared queues are named per vm_id.
//!
//! Envoy 1.40 builds the environment from `key_values` and the
//! `host_env_keys` that exist in its own environment (a missing one is
//! left out), and refuses a configuration that names a key in both. It keeps
//! them in a hash map, so the order `environ_get` gives is unspecified; the
//! harness gives `key_values` in the order given, then the host keys.

/// The Envoy node the harness stands for: `xds.node.id` and
/// `xds.node.cluster` as the guest reads them, and the `node` of the
/// bootstrap `tollgate envoy` generates (Envoy 1.40 answers `xds.node.*`
/// from its bootstrap's `node`; an SDS secret, as the native OAuth2
/// filter's, needs both set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvoyNode {
    /// `xds.node.id`.
    pub id: &'static str,
    /// `xds.node.cluster`.
    pub cluster: &'static str,
}

/// The node of the generated bootstrap and of the harness.
pub const NODE: EnvoyNode = EnvoyNode {
    id: "tollgate",
    cluster: "tollgate",
};

/// A plugin's identity as Envoy's `PluginConfig` gives it; `None` leaves the
/// host's default (see each user: `tollgate replay` and suites, `tollgate envoy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginIdentity {
    /// `name` (the `plugin_name` property).
    pub name: Option<String>,
    /// `root_id` (the `plugin_root_id` property).
    pub root_id: Option<String>,
    /// `vm_config.vm_id` (the `plugin_vm_id` property; names shared data and queues).
    pub vm_id: Option<String>,
    /// `vm_config.environment_variables.key_values`, in order.
    pub key_values: Vec<(String, String)>,
    /// `vm_config.environment_variables.host_env_keys`: the host's variables the VM may read.
    pub host_env_keys: Vec<String>,
}

/// A [`PluginIdentity`] Envoy would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A key given twice (in `key_values`, in `host_env_keys`, or in both).
    #[error(
        "environment variable {0} is given twice (Envoy refuses a key repeated in \
         vm_config.environment_variables: key_values and host_env_keys must be unique)"
    )]
    DuplicateKey(String),
    /// An empty key, or one holding `=` or NUL (WASI's `KEY=VALUE\0` could not carry it).
    #[error("environment variable name {0:?} is empty or holds `=` or NUL")]
    BadKey(String),
}

impl PluginIdentity {
    /// Whether nothing is set (the host's defaults apply throughout).
    pub fn is_default(&self) -> bool {
        *self == PluginIdentity::default()
    }

    /// Checks the environment as Envoy does: every key once, across both lists.
    pub fn check(&self) -> Result<(), IdentityError> {
        let mut seen = std::collections::HashSet::new();
        let keys = self
            .key_values
            .iter()
            .map(|(k, _)| k)
            .chain(self.host_env_keys.iter());
        for k in keys {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(IdentityError::BadKey(k.clone()));
            }
            if !seen.insert(k.as_str()) {
                return Err(IdentityError::DuplicateKey(k.clone()));
            }
        }
        Ok(())
    }

    /// The VM's environment: `key_values`, then each host key `lookup` finds
    /// (Envoy reads its own process environment; a missing key is left out).
    pub fn environment(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, IdentityError> {
        self.check()?;
        let mut env = self.key_values.clone();
        for k in &self.host_env_keys {
            if let Some(v) = lookup(k) {
                env.push((k.clone(), v));
            }
        }
        Ok(env)
    }

    /// [`PluginIdentity::environment`] from this process's environment.
    pub fn process_environment(&self) -> Result<Vec<(String, String)>, IdentityError> {
        self.environment(|k| std::env::var(k).ok())
    }

    /// Parses one `KEY=VALUE` (`--env`, a suite's `env:` entry) into `key_values`.
    pub fn push_key_value(&mut self, arg: &str) -> Result<(), String> {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg:?}: expected KEY=VALUE"))?;
        self.key_values.push((k.to_string(), v.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PluginIdentity {
        PluginIdentity {
            key_values: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            host_env_keys: vec!["H".into(), "MISSING".into()],
            ..PluginIdentity::default()
        }
    }

    #[test]
    fn key_values_come_first_then_the_host_keys_that_exist() {
        let env = id()
            .environment(|k| (k == "H").then(|| "from host".to_string()))
            .unwrap();
        assert_eq!(
            env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("H".to_string(), "from host".to_string()),
            ]
        );
    }

    #[test]
    fn a_key_in_both_lists_or_twice_is_refused_as_envoy_does() {
        let mut both = id();
        both.host_env_keys.push("A".into());
        assert_eq!(
            both.environment(|_| None),
            Err(IdentityError::DuplicateKey("A".into()))
        );
        let mut twice = PluginIdentity::default();
        twice.push_key_value("K=1").unwrap();
        twice.push_key_value("K=2").unwrap();
        assert!(
            twice
                .check()
                .unwrap_err()
                .to_string()
                .contains("K is given twice")
        );
        let mut bad = PluginIdentity::default();
        bad.host_env_keys.push("A=B".into());
        assert_eq!(bad.check(), Err(IdentityError::BadKey("A=B".into())));
        assert!(PluginIdentity::default().push_key_value("novalue").is_err());
    }
}
