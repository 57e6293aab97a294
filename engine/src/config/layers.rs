//! Loading a program's settings in layers, with every problem collected rather than the
//! first one returned: the machinery the hub (`relay.toml`, `OUTPOST_`) and the cloud
//! (`cloud.toml`, `OUTPOST_CLOUD_`) share. What the settings are is in the parent module.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Everything wrong with a configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Where a program's settings come from, later winning: embedded defaults (when given to
/// [`Layers::read`]) → a TOML file (optional) → environment variables
/// `PREFIX_SECTION__KEY`. The hub and the cloud differ only in these fields.
#[derive(Debug, Clone)]
pub struct Layers<'a> {
    /// The settings file; a missing one is no error (the defaults apply).
    pub file: PathBuf,
    /// Variables named `PREFIX_SECTION__KEY` are configuration (case does not matter, as
    /// for the `config` crate), and `PREFIX_KEY` for a key of `top_keys`; `PREFIX_SECTION`
    /// alone is read too, to be reported as the mistake it is. Other names under the
    /// prefix (`OUTPOST_BIN_DIR` in an operator's shell) are not settings and are left
    /// alone; a misspelt section or key in the settings' shape is a problem.
    pub env_prefix: &'a str,
    /// Variables under `env_prefix` that belong to another program and are skipped.
    pub env_skip: &'a [&'a str],
    /// Keys that hold lists (comma-separated in the environment).
    pub list_keys: &'a [&'a str],
    /// The sections.
    pub sections: &'a [&'a str],
    /// Keys allowed at the top level besides the sections.
    pub top_keys: &'a [&'a str],
}

/// The merged layers, read one section at a time; problems collect as they are found.
#[derive(Debug)]
pub struct Layered {
    merged: config::Config,
    /// The keys the environment set, as `section.key`.
    env_keys: Vec<String>,
    /// Everything wrong so far.
    pub problems: Vec<String>,
}

impl Layers<'_> {
    /// Merges the layers from `env` (the process's: `std::env::vars_os()`) and checks that
    /// nothing names an unknown section. `defaults`, when given, is the bottom layer: a
    /// program whose sections default differently from the types' own `Default` (the
    /// cloud's media retention) gives its defaults here, so a file that sets one key of a
    /// section keeps the program's defaults for the others.
    pub fn read<D: Serialize>(
        &self,
        defaults: Option<&D>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Layered, ConfigError> {
        let fail = |e: config::ConfigError| ConfigError { problems: vec![e.to_string()] };
        let skip: Vec<String> = self.env_skip.iter().map(|p| p.to_lowercase()).collect();
        let ours = format!("{}_", self.env_prefix.to_lowercase());
        let mut vars = HashMap::new();
        for (key, value) in env {
            let Ok(key) = key.into_string() else { continue };
            let lower = key.to_lowercase();
            if !lower.starts_with(&ours) || skip.iter().any(|p| lower.starts_with(p.as_str())) {
                continue;
            }
            // Not a setting's shape and not a section's or top key's name (which would be a
            // setting written wrong, and is reported): someone else's variable.
            let rest = &lower[ours.len()..];
            if !rest.contains("__") && !self.top_keys.contains(&rest) && !self.sections.contains(&rest) {
                continue;
            }
            let value = value.into_string().map_err(|v| ConfigError {
                problems: vec![format!("environment variable {key} is not valid UTF-8: {v:?}")],
            })?;
            vars.insert(key, value);
        }
        let env_keys = vars.keys().map(|k| k.to_lowercase()[ours.len()..].replace("__", ".")).collect();
        let mut builder = config::Config::builder();
        if let Some(d) = defaults {
            builder = builder.add_source(config::Config::try_from(d).map_err(fail)?);
        }
        let merged = builder
            .add_source(config::File::from(self.file.as_path()).format(config::FileFormat::Toml).required(false))
            .add_source({
                // Lists (the policy's roles and rooms, media types) are comma-separated in
                // the environment (`OUTPOST_POLICY__EMERGENCY_ROLES=doctor,supervisor`).
                let env = config::Environment::with_prefix(self.env_prefix)
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(vars.into_iter().collect()));
                self.list_keys.iter().fold(env.list_separator(","), |env, key| env.with_list_parse_key(key))
            })
            .build()
            .map_err(fail)?;

        let mut problems = Vec::new();
        if let Ok(table) = merged.clone().try_deserialize::<HashMap<String, config::Value>>() {
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            for key in keys {
                if !self.sections.contains(&key.as_str()) && !self.top_keys.contains(&key.as_str()) {
                    let top = match self.top_keys {
                        [] => String::new(),
                        keys => format!("; at the top: {}", keys.join(", ")),
                    };
                    problems.push(format!("unknown section `{key}` (known: {}{top})", self.sections.join(", ")));
                }
            }
        }
        Ok(Layered { merged, env_keys, problems })
    }
}

impl Layered {
    /// Section `name`, or its defaults when no layer has it. A section that cannot be read
    /// (an unknown key, a word where a number belongs) is a problem, and its defaults
    /// stand in so the other sections are still checked.
    pub fn section<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
        match self.merged.get::<T>(name) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => T::default(),
            Err(e) => {
                self.problems.push(format!("[{name}]: {e}"));
                T::default()
            }
        }
    }

    /// Whether the environment set `key` (`section.key`, or a top-level key).
    pub fn from_env(&self, key: &str) -> bool {
        self.env_keys.iter().any(|k| k == key || k.starts_with(&format!("{key}.")))
    }
}
