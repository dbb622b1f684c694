//! Reading typed settings out of a configuration tree, collecting every problem with its key
//! path instead of stopping at the first one (`validate` prints one line per problem). At the
//! bottom of the crate so that each module reads its own section (a sink its `[sink]` table).

use std::collections::BTreeSet;
use std::fmt;

use config::{Map, Value, ValueKind};

/// One configuration problem: the key path (`connectors[0].sink.stream`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems while the typed configuration is read.
#[derive(Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

pub fn describe(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => format!("boolean {b}"),
        ValueKind::I64(n) => format!("integer {n}"),
        ValueKind::I128(n) => format!("integer {n}"),
        ValueKind::U64(n) => format!("integer {n}"),
        ValueKind::U128(n) => format!("integer {n}"),
        ValueKind::Float(n) => format!("number {n}"),
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "an array".into(),
    }
}

/// A table being read: every key it is asked for is marked as used; `finish` reports the rest
/// as unknown keys.
pub struct TableReader<'a> {
    path: String,
    table: Map<String, Value>,
    used: BTreeSet<String>,
    problems: &'a mut Problems,
}

impl<'a> TableReader<'a> {
    pub fn new(path: String, table: Map<String, Value>, problems: &'a mut Problems) -> Self {
        TableReader {
            path,
            table,
            used: BTreeSet::new(),
            problems,
        }
    }

    /// Reads `value` as a table at `path`; records a problem and returns an empty table if it
    /// is something else.
    pub fn from_value(path: String, value: Value, problems: &'a mut Problems) -> Self {
        let table = match value.kind {
            ValueKind::Table(t) => t,
            other => {
                problems.push(
                    &path,
                    format!("expected a table, found {}", describe(&other)),
                );
                Map::new()
            }
        };
        Self::new(path, table, problems)
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.key_path(key);
        self.problems.push(path, message);
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Takes the raw value of `key`, if present.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_string());
        self.table.get(key).cloned()
    }

    fn type_problem(&mut self, key: &str, expected: &str, found: &ValueKind) {
        let msg = format!("expected {expected}, found {}", describe(found));
        self.problem(key, msg);
    }

    pub fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.take(key)?.kind {
            ValueKind::String(s) => Some(s),
            other => {
                self.type_problem(key, "a string", &other);
                None
            }
        }
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        if !self.has(key) {
            self.problem(key, "missing");
            self.used.insert(key.to_string());
            return None;
        }
        self.opt_string(key)
    }

    /// Every key of the table, in order.
    pub fn keys(&self) -> Vec<String> {
        self.table.keys().cloned().collect()
    }

    /// A string, number or boolean, as text (pass-through settings such as librdkafka's).
    pub fn scalar_text(&mut self, key: &str) -> Option<String> {
        let v = self.take(key)?;
        match v.kind {
            ValueKind::String(s) => Some(s),
            ValueKind::Boolean(b) => Some(b.to_string()),
            ValueKind::I64(n) => Some(n.to_string()),
            ValueKind::I128(n) => Some(n.to_string()),
            ValueKind::U64(n) => Some(n.to_string()),
            ValueKind::U128(n) => Some(n.to_string()),
            ValueKind::Float(n) => Some(n.to_string()),
            other => {
                self.type_problem(key, "a string, number or boolean", &other);
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`. Strings of digits are accepted, since
    /// environment overrides arrive as strings.
    pub fn opt_u64(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.take(key)?;
        let n = match &v.kind {
            ValueKind::I64(n) if *n >= 0 => Some(*n as u64),
            ValueKind::U64(n) => Some(*n),
            ValueKind::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.problem(key, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.type_problem(key, "a non-negative integer", &v.kind);
                None
            }
        }
    }

    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        let v = self.take(key)?;
        match &v.kind {
            ValueKind::Boolean(b) => Some(*b),
            ValueKind::String(s) if s == "true" => Some(true),
            ValueKind::String(s) if s == "false" => Some(false),
            other => {
                self.type_problem(key, "a boolean", other);
                None
            }
        }
    }

    /// A sub-table, if present.
    pub fn opt_table(&mut self, key: &str) -> Option<TableReader<'_>> {
        let v = self.take(key)?;
        let path = self.key_path(key);
        Some(TableReader::from_value(path, v, self.problems))
    }

    /// An array of tables (`[[connectors]]`): each element with its indexed path.
    pub fn table_array(&mut self, key: &str) -> Vec<(String, Value)> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let path = self.key_path(key);
        match v.kind {
            ValueKind::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (format!("{path}[{i}]"), item))
                .collect(),
            other => {
                let msg = format!("expected an array of tables, found {}", describe(&other));
                self.problems.push(path, msg);
                Vec::new()
            }
        }
    }

    /// One of `choices`; reports the accepted values otherwise.
    pub fn choice<T: Copy>(&mut self, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.opt_string(key)?;
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.problem(
                    key,
                    format!("unknown value {s:?}, expected one of {}", names.join(", ")),
                );
                None
            }
        }
    }

    /// Takes every key not read yet as read: after an unknown `type`, the rest of the table
    /// cannot be judged, and reporting each of its keys as unknown would bury the one problem.
    pub fn ignore_rest(&mut self) {
        self.used.extend(self.table.keys().cloned());
    }

    /// Reports every key that nobody asked for.
    pub fn finish(self) {
        for key in self.table.keys() {
            if !self.used.contains(key) {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                self.problems.push(path, "unknown key");
            }
        }
    }
}
