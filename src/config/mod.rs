//! connectors.toml: loading (file plus `SHARDBRIDGE__SECTION__KEY` environment overrides, and
//! `SHARDBRIDGE__CONNECTORS__<NAME>__SECTION__KEY` for one connector's keys), and reading into
//! typed settings while collecting every problem with its key path.

mod parse;

pub use crate::aws::AwsSettings;
pub use crate::lease::LeaseConfig;
pub use crate::pipeline::{Config, ConnectorConfig, WorkerConfig};
pub use crate::settings::{ConfigErrors, ConfigProblem};
pub use crate::sink::SinkConfig;
pub use crate::source::{SourceConfig, StartingPosition, StreamRef};

use std::path::Path;

use config::{Environment, File, FileFormat, Map, Value, ValueKind};

/// Reads and checks the configuration file at `path`, with environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigProblem {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_named(&text, std::env::vars(), &path.display().to_string())
}

/// Reads and checks TOML text, with `env` as the environment (a pure function of its inputs).
pub fn load_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    load_named(text, env, "connectors.toml")
}

type EnvVars = Vec<(String, String)>;

/// The prefix of an override of one connector's key: `SHARDBRIDGE__CONNECTORS__<NAME or
/// INDEX>__<SECTION>__<KEY>`.
const CONNECTOR_ENV_PREFIX: &str = "SHARDBRIDGE__CONNECTORS__";

/// `text` is the file called `name` (for messages).
fn load_named(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    name: &str,
) -> Result<Config, ConfigErrors> {
    let (connector_env, env): (EnvVars, EnvVars) = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SHARDBRIDGE__"))
        .partition(|(k, _)| k.starts_with(CONNECTOR_ENV_PREFIX));
    let env: Map<String, String> = env.into_iter().collect();
    let built = config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .add_source(
            Environment::with_prefix("SHARDBRIDGE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Map<String, Value>>());
    let mut root = built.map_err(|e| {
        ConfigErrors(vec![ConfigProblem {
            path: name.into(),
            message: e.to_string(),
        }])
    })?;
    override_connectors(&mut root, connector_env)?;
    parse::config(root)
}

/// Applies `SHARDBRIDGE__CONNECTORS__<NAME or INDEX>__…` overrides to the connector of that
/// name (upper case, `-` and `.` as `_`) or index. A variable naming no connector is an error.
fn override_connectors(root: &mut Map<String, Value>, vars: EnvVars) -> Result<(), ConfigErrors> {
    let mut problems = Vec::new();
    for (var, value) in vars {
        let rest = &var[CONNECTOR_ENV_PREFIX.len()..];
        let mut parts = rest.split("__");
        let which = parts.next().unwrap_or_default();
        let keys: Vec<String> = parts.map(str::to_lowercase).collect();
        let connectors = root.get_mut("connectors").and_then(|v| match &mut v.kind {
            ValueKind::Array(items) => Some(items),
            _ => None,
        });
        let Some(connectors) = connectors else {
            problems.push(ConfigProblem {
                path: var.clone(),
                message: "there are no [[connectors]] to override".into(),
            });
            continue;
        };
        let index = which.parse::<usize>().ok().or_else(|| {
            connectors.iter().position(|c| {
                connector_name(c).is_some_and(|n| env_name(&n) == which.to_uppercase())
            })
        });
        let Some(target) = index.and_then(|i| connectors.get_mut(i)) else {
            problems.push(ConfigProblem {
                path: var.clone(),
                message: format!("no connector named or numbered {which}"),
            });
            continue;
        };
        if keys.is_empty() || keys.iter().any(String::is_empty) {
            problems.push(ConfigProblem {
                path: var.clone(),
                message: "expected …__<SECTION>__<KEY> after the connector".into(),
            });
            continue;
        }
        if let Err(message) = set_path(target, &keys, value) {
            problems.push(ConfigProblem { path: var, message });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(problems))
    }
}

fn connector_name(c: &Value) -> Option<String> {
    match &c.kind {
        ValueKind::Table(t) => t.get("name").and_then(|n| match &n.kind {
            ValueKind::String(s) => Some(s.clone()),
            _ => None,
        }),
        _ => None,
    }
}

/// A connector's name as it appears in an environment variable.
fn env_name(name: &str) -> String {
    name.to_uppercase().replace(['-', '.'], "_")
}

/// Sets `keys` (nested tables, created as needed) of `table` to the string `value`; the reader
/// converts it like any other environment override.
fn set_path(table: &mut Value, keys: &[String], value: String) -> Result<(), String> {
    let ValueKind::Table(map) = &mut table.kind else {
        return Err("the connector entry is not a table".into());
    };
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut map = map;
    for k in parents {
        let entry = map
            .entry(k.clone())
            .or_insert_with(|| Value::new(None, ValueKind::Table(Map::new())));
        map = match &mut entry.kind {
            ValueKind::Table(m) => m,
            _ => return Err(format!("{k} is not a table")),
        };
    }
    map.insert(last.clone(), Value::new(None, ValueKind::String(value)));
    Ok(())
}
