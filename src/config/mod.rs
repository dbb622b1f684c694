//! connectors.toml: loading (file plus `SHARDBRIDGE__SECTION__KEY` environment overrides), and
//! reading into typed settings while collecting every problem with its key path.

mod parse;

pub use crate::aws::AwsSettings;
pub use crate::lease::LeaseConfig;
pub use crate::pipeline::{Config, ConnectorConfig, WorkerConfig};
pub use crate::settings::{ConfigErrors, ConfigProblem};
pub use crate::sink::SinkConfig;
pub use crate::source::{SourceConfig, StartingPosition, StreamRef};

use std::path::Path;

use config::{Environment, File, FileFormat, Map, Value};

/// Reads and checks the configuration file at `path`, with environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigProblem {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&text, std::env::vars())
}

/// Reads and checks TOML text, with `env` as the environment (a pure function of its inputs).
pub fn load_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let env: Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SHARDBRIDGE__"))
        .collect();
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
    let root = built.map_err(|e| {
        ConfigErrors(vec![ConfigProblem {
            path: "connectors.toml".into(),
            message: e.to_string(),
        }])
    })?;
    parse::config(root)
}
