//! Layering: defaults → config file → environment → CLI overrides. Each layer is a
//! TOML tree merged over the previous one; the merged tree is deserialized once, and
//! an error names the key and the layer it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{ENV_PREFIX, Settings};

/// Keys that hold secrets and may only come from the environment (or a `*_file` key).
const ENV_ONLY_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "chain.distributor_key",
    "chain.manager_key",
];

/// Where the configuration comes from. Tests build one by hand, so they never need
/// to mutate the process environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file; `None` uses `./config.toml` when it exists.
    pub file: Option<PathBuf>,
    /// Environment variables (only `REWARDFLOW_*` ones with a `__` are read).
    pub env: Vec<(String, String)>,
    /// CLI flags, applied last.
    pub overrides: Vec<Override>,
}

impl ConfigSource {
    /// The process's own environment and the given file.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }

    pub fn with_override(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push(Override {
            key: key.to_owned(),
            value: value.into(),
            flag: format!("override of {key}"),
        });
        self
    }
}

/// One CLI flag setting one key.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: Value,
    /// The flag as the user typed it, for error messages.
    pub flag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration key `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

impl ConfigError {
    pub(super) fn invalid(key: &str, message: &str) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: "the effective configuration".into(),
            message: message.to_owned(),
        }
    }
}

pub(super) fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
    let defaults = Value::try_from(Settings::default()).expect("defaults serialize");
    let mut merged = defaults.as_table().expect("settings are a table").clone();
    // Which layer last set each key, for error messages.
    let mut origins: BTreeMap<String, String> = BTreeMap::new();

    if let Some((path, table)) = read_file(source.file.as_deref())? {
        let origin = path.display().to_string();
        for key in leaf_keys(&table, "") {
            if ENV_ONLY_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Invalid {
                    key,
                    origin,
                    message: "is a secret: set it in the environment or through its *_file key"
                        .into(),
                });
            }
            origins.insert(key, origin.clone());
        }
        merge(&mut merged, table);
    }

    for (name, raw) in &source.env {
        let Some(key) = env_key(name) else { continue };
        let typed =
            typed_env_value(&merged, &key, raw).map_err(|message| ConfigError::Invalid {
                key: key.clone(),
                origin: format!("environment variable {name}"),
                message,
            })?;
        set_path(&mut merged, &key, typed);
        origins.insert(key, format!("environment variable {name}"));
    }

    for flag in &source.overrides {
        set_path(&mut merged, &flag.key, flag.value.clone());
        origins.insert(flag.key.clone(), flag.flag.clone());
    }

    let settings: Settings =
        serde_path_to_error::deserialize(Value::Table(merged)).map_err(|err| {
            let key = err.path().to_string();
            let origin = origins
                .iter()
                .find(|(k, _)| key == **k || key.starts_with(&format!("{k}.")))
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| "the effective configuration".into());
            ConfigError::Invalid {
                key,
                origin,
                message: err.into_inner().to_string(),
            }
        })?;
    settings.validate()?;
    Ok(settings)
}

fn read_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, Table)>, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("config.toml");
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table = text.parse::<Table>().map_err(|err| ConfigError::Syntax {
        path: path.clone(),
        message: err.to_string(),
    })?;
    Ok(Some((path, table)))
}

/// `REWARDFLOW_SERVER__LISTEN` → `server.listen`. Variables without `__` are CLI-only
/// (e.g. `REWARDFLOW_CONFIG`) and are not configuration keys.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if !rest.contains("__") {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// Environment values are strings; the type of the key's current value decides how
/// to read them. Unknown keys are rejected here, naming the variable.
fn typed_env_value(tree: &Table, key: &str, raw: &str) -> Result<Value, String> {
    let current = get_path(tree, key).ok_or_else(|| "is not a configuration key".to_string())?;
    match current {
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Value::Boolean(_) => match raw.trim() {
            "true" | "1" => Ok(Value::Boolean(true)),
            "false" | "0" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected a number, got {raw:?}")),
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
        Value::Table(_) => Err("is a section, not a key".into()),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

fn leaf_keys(table: &Table, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => keys.extend(leaf_keys(inner, &key)),
            _ => keys.push(key),
        }
    }
    keys
}

fn merge(base: &mut Table, layer: Table) {
    for (name, value) in layer {
        match (base.get_mut(&name), value) {
            (Some(Value::Table(inner)), Value::Table(layer_inner)) => merge(inner, layer_inner),
            (_, value) => {
                base.insert(name, value);
            }
        }
    }
}

fn get_path<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

fn set_path(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            set_path(
                entry.as_table_mut().expect("just made a table"),
                rest,
                value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn env(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource {
            file: Some(PathBuf::from("/nonexistent/rewardflow-test.toml")),
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overrides: Vec::new(),
        }
    }

    fn load_with_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut source = env(pairs);
        source.file = None;
        // `None` looks for ./config.toml; keep tests independent of the cwd.
        let dir = TempDir::new("rf-cfg");
        let file = dir.path().join("empty.toml");
        std::fs::write(&file, "").unwrap();
        source.file = Some(file);
        Settings::load(&source)
    }

    #[test]
    fn environment_overrides_defaults_with_types_from_the_schema() {
        let settings = load_with_env(&[
            ("REWARDFLOW_SERVER__LISTEN", "0.0.0.0:9000"),
            ("REWARDFLOW_DATABASE__MAX_CONNECTIONS", "32"),
            ("REWARDFLOW_DATABASE__MIGRATE_ON_START", "false"),
            ("REWARDFLOW_AUTH__SIWE_DOMAINS", "shop.example, app.example"),
            ("REWARDFLOW_CONFIG", "ignored: not a key"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(settings.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(settings.database.max_connections, 32);
        assert!(!settings.database.migrate_on_start);
        assert_eq!(
            settings.auth.siwe_domains,
            vec!["shop.example", "app.example"]
        );
    }

    #[test]
    fn errors_name_the_key_and_the_variable() {
        let err = load_with_env(&[("REWARDFLOW_DATABASE__MAX_CONNECTIONS", "many")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("database.max_connections"), "{text}");
        assert!(
            text.contains("REWARDFLOW_DATABASE__MAX_CONNECTIONS"),
            "{text}"
        );

        let err = load_with_env(&[("REWARDFLOW_SERVER__LISTN", "x")]).unwrap_err();
        assert!(err.to_string().contains("server.listn"), "{err}");

        let err = load_with_env(&[("REWARDFLOW_SERVER__LISTEN", "nowhere")]).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");

        let err = load_with_env(&[("REWARDFLOW_DATABASE__MAX_CONNECTIONS", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("database.max_connections"),
            "{err}"
        );
        // Zero would stall or panic what these size or pace.
        for key in [
            "ingest.product_mailbox_capacity",
            "ingest.writer_max_pending_rows",
            "ingest.writer_max_batch_rows",
            "ingest.writer_flush_concurrency",
            "ingest.writer_retry_interval_ms",
            "dev.push_interval_ms",
        ] {
            let variable = format!("REWARDFLOW_{}", key.to_uppercase().replace('.', "__"));
            let err = load_with_env(&[(variable.as_str(), "0")]).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = TempDir::new("rf-cfg");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1111\"\nrequest_timeout_ms = 5\n[database]\nmax_connections = 3\n",
        )
        .unwrap();
        let mut source = env(&[("REWARDFLOW_SERVER__LISTEN", "127.0.0.1:2222")]);
        source.file = Some(file.clone());
        let source = source.with_override("database.max_connections", 7);
        let settings = Settings::load(&source).unwrap();
        assert_eq!(settings.server.listen.port(), 2222);
        assert_eq!(settings.server.request_timeout_ms, 5);
        assert_eq!(settings.database.max_connections, 7);

        std::fs::write(&file, "[server]\nlisten = 5\n").unwrap();
        let mut source = env(&[]);
        source.file = Some(file.clone());
        let err = Settings::load(&source).unwrap_err().to_string();
        assert!(
            err.contains("server.listen") && err.contains("config.toml"),
            "{err}"
        );

        std::fs::write(&file, "[auth]\njwt_secret = \"in-a-file\"\n").unwrap();
        let err = Settings::load(&source).unwrap_err().to_string();
        assert!(
            err.contains("auth.jwt_secret") && err.contains("secret"),
            "{err}"
        );

        std::fs::write(&file, "[server]\nunknown_key = 1\n").unwrap();
        let err = Settings::load(&source).unwrap_err().to_string();
        assert!(err.contains("unknown_key"), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Settings::load(&env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }

    #[test]
    fn the_repository_config_file_documents_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let file: Table = text.parse().unwrap();
        let defaults = Value::try_from(Settings::default()).unwrap();
        let mut documented = leaf_keys(&file, "");
        documented.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# key: "))
                .map(str::to_owned),
        );
        for key in leaf_keys(defaults.as_table().unwrap(), "") {
            assert!(
                documented.contains(&key),
                "config.toml does not document `{key}`"
            );
        }
        for key in leaf_keys(&file, "") {
            let default = get_path(defaults.as_table().unwrap(), &key);
            assert_eq!(
                default,
                get_path(&file, &key),
                "config.toml `{key}` differs from the default"
            );
        }
    }
}
