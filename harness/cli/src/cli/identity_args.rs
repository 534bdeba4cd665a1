//! `--plugin-name`, `--root-id`, `--vm-id`, `--env KEY=VALUE` and
//! `--host-env KEY`: a plugin's identity as Envoy's plugin configuration
//! gives it (`name`, `root_id`, `vm_config.vm_id`,
//! `vm_config.environment_variables.key_values` / `host_env_keys`), the same
//! flags on `replay`, `bench` and `envoy`. In a chain each belongs to the
//! `--filter` before it, as `--config` does.

use anyhow::{Result, bail};
use clap::ArgMatches;
use tollgate_abi::PluginIdentity;

use crate::chain_args::FilterArg;

/// The identity flags, flattened into each command that starts VMs.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Plugin identity (as Envoy's plugin configuration)")]
pub struct IdentityArgs {
    /// The plugin's `name` (the `plugin_name` property) of the --filter before it.
    #[arg(long, value_name = "NAME")]
    pub plugin_name: Vec<String>,
    /// The plugin's `root_id` (the `plugin_root_id` property) of the --filter before it.
    #[arg(long, value_name = "ID")]
    pub root_id: Vec<String>,
    /// The VM's `vm_id` (the `plugin_vm_id` property; shared data and queues
    /// are named per vm_id) of the --filter before it.
    #[arg(long, value_name = "ID")]
    pub vm_id: Vec<String>,
    /// An environment variable of the VM (`key_values`), read with WASI
    /// environ_get; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A variable of this process's environment the VM may read
    /// (`host_env_keys`; left out when unset, as Envoy does); repeatable.
    #[arg(long, value_name = "KEY")]
    pub host_env: Vec<String>,
}

impl IdentityArgs {
    /// The identity of a single filter (every flag belongs to it).
    pub fn single(&self) -> Result<PluginIdentity> {
        let one = [FilterArg {
            path: Default::default(),
            config: None,
            vm_config: None,
            failure_policy: None,
        }];
        let mut ids = vec![PluginIdentity::default()];
        self.assign(None, &one, &mut ids)?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Pairs the flags with the filters by position (each belongs to the
    /// closest `--filter` before it; with one filter, position does not
    /// matter); one identity per filter, checked as Envoy checks it.
    pub fn pair(
        &self,
        m: Option<&ArgMatches>,
        filters: &[FilterArg],
    ) -> Result<Vec<PluginIdentity>> {
        let mut ids = vec![PluginIdentity::default(); filters.len()];
        self.assign(m, filters, &mut ids)?;
        Ok(ids)
    }

    fn assign(
        &self,
        m: Option<&ArgMatches>,
        filters: &[FilterArg],
        ids: &mut [PluginIdentity],
    ) -> Result<()> {
        let filter_at: Vec<usize> = m
            .and_then(|m| m.indices_of("filter"))
            .map(Iterator::collect)
            .unwrap_or_default();
        let lists: [(&str, &Vec<String>); 5] = [
            ("plugin_name", &self.plugin_name),
            ("root_id", &self.root_id),
            ("vm_id", &self.vm_id),
            ("env", &self.env),
            ("host_env", &self.host_env),
        ];
        for (id, values) in lists {
            let at: Vec<usize> = m
                .and_then(|m| m.indices_of(id))
                .map(Iterator::collect)
                .unwrap_or_default();
            let flag = format!("--{}", id.replace('_', "-"));
            for (j, value) in values.iter().enumerate() {
                let owner = if filters.len() == 1 {
                    0
                } else {
                    let pos = at.get(j).copied().unwrap_or(usize::MAX);
                    match filter_at.iter().rposition(|&f| f < pos) {
                        Some(k) => k,
                        None => bail!("{flag} must follow the --filter it belongs to"),
                    }
                };
                let Some(ident) = ids.get_mut(owner) else {
                    bail!("{flag} must follow the --filter it belongs to");
                };
                let name = filters[owner].path.display();
                let once = |slot: &mut Option<String>| -> Result<()> {
                    if slot.is_some() {
                        bail!("{flag} given twice for --filter {name}");
                    }
                    *slot = Some(value.clone());
                    Ok(())
                };
                match id {
                    "plugin_name" => once(&mut ident.name)?,
                    "root_id" => once(&mut ident.root_id)?,
                    "vm_id" => once(&mut ident.vm_id)?,
                    "env" => ident
                        .push_key_value(value)
                        .map_err(|e| anyhow::anyhow!("{flag} {e}"))?,
                    _ => ident.host_env_keys.push(value.clone()),
                }
            }
        }
        for (ident, f) in ids.iter().zip(filters) {
            if let Err(e) = ident.check() {
                bail!("--env/--host-env for --filter {}: {e}", f.path.display());
            }
        }
        Ok(())
    }
}
