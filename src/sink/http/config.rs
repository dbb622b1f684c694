//! The http sink's `[sink]` table, with its defaults and checks.

use std::collections::BTreeMap;

use crate::settings::TableReader;

/// Lambda's defaults for stream sources: batches of 100, the 6 MB invocation payload limit
/// (less room for the envelope), no batching window.
pub const DEFAULT_MAX_RECORDS: usize = 100;
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
pub const DEFAULT_MAX_BYTES: usize = MAX_PAYLOAD_BYTES - 64 * 1024;
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 0;
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// Where each batch is POSTed (http:// or https://).
    pub url: String,
    /// How long one invocation may take before it counts as a function error.
    pub timeout_ms: u64,
    /// Extra request headers, by name: their values as written, `${NAME}` standing for the
    /// environment variable NAME (resolved at start, never logged).
    pub headers: BTreeMap<String, String>,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval_ms: u64,
    /// Lambda's BisectBatchOnFunctionError.
    pub bisect_on_error: bool,
    /// Lambda's FunctionResponseTypes = ["ReportBatchItemFailures"].
    pub report_batch_item_failures: bool,
    pub tls: TlsConfig,
}

/// For https: what to trust besides the system's roots, and the client's own certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust as well.
    pub ca_file: Option<String>,
    /// PEM files of a client certificate (chain) and its private key, for mutual TLS.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

impl HttpSinkConfig {
    /// Reads the `[sink]` table of `type = "http"` (the type is read by the caller).
    pub fn read(t: &mut TableReader) -> Option<HttpSinkConfig> {
        let url = t.string("url");
        if let Some(u) = &url {
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            if !scheme_ok || u.parse::<reqwest::Url>().is_err() {
                t.problem("url", format!("{u:?} is not an http:// or https:// URL"));
            }
        }
        let timeout_ms = t
            .opt_u64("timeout_ms", 1, 900_000)
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let headers = read_headers(t);
        let (max_records, max_bytes, max_interval_ms) = super::super::read_batch_limits(
            t,
            (
                DEFAULT_MAX_RECORDS,
                DEFAULT_MAX_BYTES,
                DEFAULT_MAX_INTERVAL_MS,
            ),
        );
        if max_bytes > MAX_PAYLOAD_BYTES {
            t.problem(
                "max_bytes",
                format!("{max_bytes} is over {MAX_PAYLOAD_BYTES} (Lambda's 6 MB payload limit, which handlers are written for)"),
            );
        }
        let bisect_on_error = t.opt_bool("bisect_on_error").unwrap_or(false);
        let report_batch_item_failures = t.opt_bool("report_batch_item_failures").unwrap_or(false);
        let tls = match t.opt_table("tls") {
            Some(mut tls) => {
                let c = TlsConfig {
                    ca_file: tls.opt_string("ca_file"),
                    cert_file: tls.opt_string("cert_file"),
                    key_file: tls.opt_string("key_file"),
                };
                if c.cert_file.is_some() != c.key_file.is_some() {
                    tls.problem(
                        "cert_file",
                        "cert_file and key_file go together (a client certificate and its key)",
                    );
                }
                tls.finish();
                c
            }
            None => TlsConfig::default(),
        };
        Some(HttpSinkConfig {
            url: url?,
            timeout_ms,
            headers: headers?,
            max_records,
            max_bytes,
            max_interval_ms,
            bisect_on_error,
            report_batch_item_failures,
            tls,
        })
    }
}

/// `headers`: a table of header names and string values; a `${NAME}` must name a variable.
fn read_headers(t: &mut TableReader) -> Option<BTreeMap<String, String>> {
    let mut headers = BTreeMap::new();
    let Some(mut h) = t.opt_table("headers") else {
        return Some(headers);
    };
    let mut ok = true;
    for name in h.keys() {
        let Some(value) = h.string(&name) else {
            ok = false;
            continue;
        };
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            h.problem(&name, "is not a valid HTTP header name");
            ok = false;
        }
        if let Err(why) = env_references(&value) {
            // The value may hold a secret: the message names only what is wrong with it.
            h.problem(&name, why);
            ok = false;
        }
        headers.insert(name, value);
    }
    h.finish();
    ok.then_some(headers)
}

/// The environment variables a header value names (`${NAME}`), or why it is malformed.
pub fn env_references(value: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("has a \"${\" without its closing \"}\"".into());
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "names {name:?}, which is not an environment variable name"
            ));
        }
        names.push(name.to_string());
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// The header value with each `${NAME}` replaced by that variable, or the first one unset.
pub fn resolve(value: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').unwrap_or(after.len());
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_name_environment_variables() {
        assert_eq!(env_references("plain").unwrap(), Vec::<String>::new());
        assert_eq!(
            env_references("Bearer ${TOKEN} ${X_2}").unwrap(),
            ["TOKEN", "X_2"]
        );
        assert!(env_references("${TOKEN").is_err());
        assert!(env_references("${}").is_err());
        assert!(env_references("${1X}").is_err());
        assert!(env_references("${A-B}").is_err());
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(resolve("Bearer ${TOKEN}!", env).unwrap(), "Bearer s3cret!");
        assert_eq!(resolve("no vars", env).unwrap(), "no vars");
        assert_eq!(resolve("${MISSING}", env).unwrap_err(), "MISSING");
    }
}
