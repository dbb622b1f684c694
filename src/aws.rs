//! AWS SDK configuration from `[aws]` settings (region, endpoint override, assumed role), and
//! the classes of AWS errors that callers branch on.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::settings::TableReader;

/// Where and as whom AWS calls go. Connector-level tables override the global `[aws]` key by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    /// Time to establish a connection (default `DEFAULT_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: Option<u64>,
    /// Time one attempt of a call may take (default `DEFAULT_ATTEMPT_TIMEOUT_MS`).
    pub attempt_timeout_ms: Option<u64>,
    /// Time a call may take with its SDK retries (default `DEFAULT_OPERATION_TIMEOUT_MS`): a
    /// half-open connection cannot hang a shard longer than this.
    pub operation_timeout_ms: Option<u64>,
}

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_OPERATION_TIMEOUT_MS: u64 = 60_000;

impl AwsSettings {
    /// `self` with every unset key taken from `defaults`.
    pub fn or(&self, defaults: &AwsSettings) -> AwsSettings {
        AwsSettings {
            region: self.region.clone().or_else(|| defaults.region.clone()),
            endpoint_url: self
                .endpoint_url
                .clone()
                .or_else(|| defaults.endpoint_url.clone()),
            role_arn: self.role_arn.clone().or_else(|| defaults.role_arn.clone()),
            connect_timeout_ms: self.connect_timeout_ms.or(defaults.connect_timeout_ms),
            attempt_timeout_ms: self.attempt_timeout_ms.or(defaults.attempt_timeout_ms),
            operation_timeout_ms: self.operation_timeout_ms.or(defaults.operation_timeout_ms),
        }
    }

    /// Reads the table `key` of `parent` (absent: nothing set).
    pub fn read(parent: &mut TableReader, key: &str) -> AwsSettings {
        let Some(mut t) = parent.opt_table(key) else {
            return AwsSettings::default();
        };
        let region = t.opt_string("region");
        let endpoint_url = t.opt_string("endpoint_url");
        if let Some(url) = &endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                t.problem(
                    "endpoint_url",
                    format!("{url:?} must start with http:// or https://"),
                );
            }
        }
        let role_arn = t.opt_string("role_arn");
        if let Some(arn) = &role_arn {
            if !arn.starts_with("arn:") {
                t.problem("role_arn", format!("{arn:?} is not an ARN"));
            }
        }
        let connect_timeout_ms = t.opt_u64("connect_timeout_ms", 100, 600_000);
        let attempt_timeout_ms = t.opt_u64("attempt_timeout_ms", 100, 3_600_000);
        let operation_timeout_ms = t.opt_u64("operation_timeout_ms", 100, 3_600_000);
        if let (Some(a), Some(o)) = (attempt_timeout_ms, operation_timeout_ms) {
            if a > o {
                t.problem(
                    "attempt_timeout_ms",
                    format!("{a} must not exceed operation_timeout_ms ({o})"),
                );
            }
        }
        t.finish();
        AwsSettings {
            region,
            endpoint_url,
            role_arn,
            connect_timeout_ms,
            attempt_timeout_ms,
            operation_timeout_ms,
        }
    }
}

fn ms(value: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(value.unwrap_or(default))
}

/// The SDK configuration for `settings`. Every call has connect, attempt and operation
/// timeouts, so nothing waits on a silent server; a timeout is a transient error.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Fail fast on an unreachable endpoint; our own loops retry with back-off and metrics.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(ms(settings.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS))
                .operation_attempt_timeout(ms(
                    settings.attempt_timeout_ms,
                    DEFAULT_ATTEMPT_TIMEOUT_MS,
                ))
                .operation_timeout(ms(
                    settings.operation_timeout_ms,
                    DEFAULT_OPERATION_TIMEOUT_MS,
                ))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2));
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let base = loader.load().await;
    match &settings.role_arn {
        None => base,
        Some(arn) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("shardbridge")
                .configure(&base)
                .build()
                .await;
            base.into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

/// The ARN of the identity the calls of `sdk` are made as (STS GetCallerIdentity, which needs
/// no permission), as Lambda writes `invokeIdentityArn`: an assumed role's session is named by
/// its role.
pub async fn caller_identity_arn(sdk: &SdkConfig) -> Result<String, (AwsErrorClass, String)> {
    let client = aws_sdk_sts::Client::new(sdk);
    let out = client
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| classify("GetCallerIdentity", &e))?;
    let arn = out.arn().ok_or_else(|| {
        (
            AwsErrorClass::Transient,
            "GetCallerIdentity: the answer has no Arn".to_string(),
        )
    })?;
    Ok(identity_arn(arn))
}

/// `arn:aws:sts::123:assumed-role/Role/session` → `arn:aws:iam::123:role/Role` (the role, as
/// Lambda names its execution role); any other ARN unchanged.
pub fn identity_arn(caller: &str) -> String {
    let parts: Vec<&str> = caller.splitn(6, ':').collect();
    if let [arn, partition, "sts", _, account, resource] = parts.as_slice() {
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            if let Some((role, _session)) = rest.rsplit_once('/') {
                return format!("{arn}:{partition}:iam::{account}:role/{role}");
            }
        }
    }
    caller.to_string()
}

/// What kind of failure an AWS call had: callers branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsErrorClass {
    /// A conditional write's condition did not hold.
    ConditionFailed,
    ExpiredIterator,
    TrimmedData,
    Throttled,
    NotFound,
    /// Worth retrying: network, timeouts, 5xx, and servers that answer a bad iterator with 500.
    Transient,
    /// Nothing a retry fixes: credentials, permissions, invalid requests.
    Fatal,
}

/// An SDK response that can tell its HTTP status and body (the unit response of tests cannot).
pub trait ResponseStatus {
    fn http_status(&self) -> Option<u16>;
    fn body_bytes(&self) -> Option<&[u8]>;
}

impl ResponseStatus for aws_sdk_dynamodb::config::http::HttpResponse {
    fn http_status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
    fn body_bytes(&self) -> Option<&[u8]> {
        self.body().bytes()
    }
}

impl ResponseStatus for () {
    fn http_status(&self) -> Option<u16> {
        None
    }
    fn body_bytes(&self) -> Option<&[u8]> {
        None
    }
}

/// The code and message of an error body the SDK could not read as its protocol's: the XML
/// shape (`<Code>`, `<Message>`) that query-protocol services, proxies and some emulators
/// answer with even for JSON services, or a JSON body with `__type`/`code` and `message`.
fn body_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_string())
    };
    if let (Some(code), message) = (tag("Code"), tag("Message")) {
        return (Some(code), message);
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| map.get(*n).and_then(|v| v.as_str()).map(str::to_string))
        };
        let code = field(&["__type", "code", "Code"])
            .map(|c| c.rsplit('#').next().unwrap_or_default().to_string());
        return (code, field(&["message", "Message"]));
    }
    (None, None)
}

/// Longest service message kept in an error line: access-denied messages name the action and
/// the resource (about 200 characters); anything longer is an echo of the request.
const MAX_MESSAGE_CHARS: usize = 240;

/// Classifies by error code rather than by each operation's generated enum, so that every
/// operation shares one table and unknown future codes still land in a class. The text is one
/// readable line: `operation: code: message (request id …)`, and for what will not heal by
/// itself, what to fix. Never a Debug dump of SDK types.
pub fn classify<E, R>(operation: &str, err: &SdkError<E, R>) -> (AwsErrorClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: ResponseStatus + std::fmt::Debug + 'static,
{
    use AwsErrorClass::*;
    if missing_credentials(err) {
        return (
            Fatal,
            format!(
                "{operation}: no AWS credentials found (tried environment, profile, web \
                 identity, container and instance metadata); set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or give shardbridge a role"
            ),
        );
    }
    let class = match err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) => class_of_code(code),
            // Some servers answer a refusal in a body the SDK cannot read.
            None => match service.raw().http_status() {
                Some(401 | 403) => Fatal,
                Some(404) => NotFound,
                Some(429) => Throttled,
                _ => Transient,
            },
        },
        SdkError::ResponseError(response) => {
            match body_error(response.raw().body_bytes().unwrap_or_default()) {
                (Some(code), _) => class_of_code(&code),
                _ => match response.raw().http_status() {
                    Some(401 | 403) => Fatal,
                    _ => Transient,
                },
            }
        }
        SdkError::DispatchFailure(d) if d.is_user() => Fatal,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Transient,
        // Construction failures (a missing region, say): nothing a retry fixes.
        _ => Fatal,
    };
    (class, describe(operation, err))
}

fn class_of_code(code: &str) -> AwsErrorClass {
    use AwsErrorClass::*;
    match code {
        "ConditionalCheckFailedException" => ConditionFailed,
        "ExpiredIteratorException" => ExpiredIterator,
        "TrimmedDataAccessException" => TrimmedData,
        "LimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "KMSThrottlingException"
        | "SlowDown" => Throttled,
        "ResourceNotFoundException" | "NoSuchBucket" => NotFound,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ValidationException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "MissingAuthenticationToken"
        | "InvalidArgumentException"
        // A broken KMS key is not fixed by retrying.
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired" => Fatal,
        // Expired temporary credentials: a refreshing provider has new ones by the next call.
        _ => Transient,
    }
}

/// What to do about an error that will not heal by itself, by its code.
fn fix_for(code: &str) -> Option<&'static str> {
    match code {
        "AccessDeniedException" | "AccessDenied" | "KMSAccessDeniedException" => {
            Some("grant it to the identity shardbridge runs as (docs/iam)")
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "MissingAuthenticationToken" => Some("check the AWS access key and secret"),
        "ResourceNotFoundException" | "NoSuchBucket" => Some("check the name, region and account"),
        _ => None,
    }
}

/// One readable line for an SDK error: the operation, the service's code and message, the
/// request id, and for what will not heal by itself what to fix.
pub fn describe<E, R>(operation: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: ResponseStatus + std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().http_status();
            let code = e
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| match status {
                    Some(s) => format!("HTTP {s}"),
                    None => "unknown error".to_string(),
                });
            let mut line = format!("{operation}: {code}");
            if let Some(message) = e.message().filter(|m| !m.is_empty()) {
                line.push_str(": ");
                line.push_str(&shorten(message, MAX_MESSAGE_CHARS));
            }
            if let Some(id) = e.meta().extra("aws_request_id") {
                line.push_str(&format!(" (request id {id})"));
            }
            let fix = e.code().and_then(fix_for).or(match status {
                Some(401 | 403) => fix_for("AccessDenied"),
                _ => None,
            });
            if let Some(fix) = fix {
                line.push_str("; ");
                line.push_str(fix);
            }
            line
        }
        SdkError::TimeoutError(_) => format!(
            "{operation}: timed out (no answer within the aws timeouts; the endpoint may be \
             unreachable)"
        ),
        SdkError::DispatchFailure(d) => {
            let what = if d.is_timeout() {
                "connection timed out"
            } else if d.is_io() {
                "could not reach the endpoint"
            } else {
                "request not sent"
            };
            format!("{operation}: {what}: {}", root_cause(err))
        }
        SdkError::ResponseError(response) => {
            let raw = response.raw();
            match body_error(raw.body_bytes().unwrap_or_default()) {
                (Some(code), message) => {
                    let mut line = format!("{operation}: {code}");
                    if let Some(m) = message.filter(|m| !m.is_empty()) {
                        line.push_str(": ");
                        line.push_str(&shorten(&m, MAX_MESSAGE_CHARS));
                    }
                    if let Some(fix) = fix_for(&code) {
                        line.push_str("; ");
                        line.push_str(fix);
                    }
                    line
                }
                _ => match raw.http_status() {
                    Some(status @ (401 | 403)) => format!(
                        "{operation}: HTTP {status} (access denied); {}",
                        fix_for("AccessDenied").unwrap_or_default()
                    ),
                    Some(status) => format!(
                        "{operation}: unreadable HTTP {status} answer: {}",
                        root_cause(err)
                    ),
                    None => format!("{operation}: unreadable answer: {}", root_cause(err)),
                },
            }
        }
        _ => format!("{operation}: request not built: {}", root_cause(err)),
    }
}

/// The innermost error's message: for a refused connection "Connection refused (os error
/// 111)", rather than every layer's wrapping of it.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = err;
    while let Some(next) = inner.source() {
        inner = next;
    }
    shorten(&inner.to_string(), MAX_MESSAGE_CHARS)
}

fn missing_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut at = Some(err);
    while let Some(e) = at {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return matches!(
                c,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            );
        }
        at = e.source();
    }
    false
}

/// `text` on one line, cut to `max` characters.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
    use aws_smithy_types::body::SdkBody;

    fn service(
        code: Option<&str>,
        message: Option<&str>,
        request_id: Option<&str>,
        status: u16,
    ) -> SdkError<DescribeTableError, HttpResponse> {
        let mut meta = ErrorMetadata::builder();
        if let Some(c) = code {
            meta = meta.code(c);
        }
        if let Some(m) = message {
            meta = meta.message(m);
        }
        if let Some(id) = request_id {
            meta = meta.custom("aws_request_id", id);
        }
        SdkError::service_error(
            DescribeTableError::generic(meta.build()),
            HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    fn unreadable(status: u16, body: &str) -> SdkError<DescribeTableError, HttpResponse> {
        SdkError::response_error(
            "malformed JSON error body",
            HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_string())),
        )
    }

    #[test]
    fn a_service_error_is_one_line_with_code_message_request_id_and_fix() {
        let e = service(
            Some("ResourceNotFoundException"),
            Some("Requested resource not found: Table: orders not found"),
            Some("ABC123"),
            400,
        );
        assert_eq!(
            classify("DescribeTable", &e),
            (
                AwsErrorClass::NotFound,
                "DescribeTable: ResourceNotFoundException: Requested resource not found: \
                 Table: orders not found (request id ABC123); check the name, region and account"
                    .to_string()
            )
        );
        let (class, text) = classify(
            "PutRecords",
            &service(
                Some("AccessDeniedException"),
                Some("not allowed"),
                None,
                400,
            ),
        );
        assert_eq!(class, AwsErrorClass::Fatal);
        assert!(text.ends_with("grant it to the identity shardbridge runs as (docs/iam)"));
        // Throttling and server trouble: retried, no fix to name.
        let (class, text) = classify(
            "GetRecords",
            &service(Some("InternalServerError"), Some("oops"), Some("r"), 500),
        );
        assert_eq!(class, AwsErrorClass::Transient);
        assert_eq!(text, "GetRecords: InternalServerError: oops (request id r)");
    }

    #[test]
    fn an_error_without_a_code_is_classed_by_its_status() {
        let (class, text) = classify("DescribeTable", &service(None, None, None, 403));
        assert_eq!(class, AwsErrorClass::Fatal);
        assert!(text.starts_with("DescribeTable: HTTP 403"), "{text}");
        assert_eq!(
            classify("X", &service(None, None, None, 429)).0,
            AwsErrorClass::Throttled
        );
        assert_eq!(
            classify("X", &service(None, None, None, 503)).0,
            AwsErrorClass::Transient
        );
    }

    #[test]
    fn a_body_the_sdk_cannot_read_still_gives_its_code() {
        // What moto answers a JSON-protocol call that IAM refuses.
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/u is not authorized to perform: kinesis:PutRecords</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        let (class, text) = classify("PutRecords", &unreadable(403, xml));
        assert_eq!(class, AwsErrorClass::Fatal);
        assert_eq!(
            text,
            "PutRecords: AccessDenied: User: arn:aws:iam::1:user/u is not authorized to \
             perform: kinesis:PutRecords; grant it to the identity shardbridge runs as (docs/iam)"
        );
        let json = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#;
        assert_eq!(
            classify("X", &unreadable(400, json)),
            (
                AwsErrorClass::Throttled,
                "X: ThrottlingException: slow down".to_string()
            )
        );
        let (class, text) = classify("X", &unreadable(403, "<html>nope</html>"));
        assert_eq!(class, AwsErrorClass::Fatal);
        assert!(text.contains("HTTP 403 (access denied)"), "{text}");
        let (class, text) = classify("X", &unreadable(502, "<html>bad gateway</html>"));
        assert_eq!(class, AwsErrorClass::Transient);
        assert!(
            text.starts_with("X: unreadable HTTP 502 answer: "),
            "{text}"
        );
    }

    #[test]
    fn an_assumed_role_is_named_by_its_role() {
        assert_eq!(
            identity_arn("arn:aws:sts::123456789012:assumed-role/shardbridge/i-0abc"),
            "arn:aws:iam::123456789012:role/shardbridge"
        );
        assert_eq!(
            identity_arn("arn:aws-cn:sts::123456789012:assumed-role/a/b"),
            "arn:aws-cn:iam::123456789012:role/a"
        );
        for unchanged in [
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:role/shardbridge",
            "arn:aws:sts::123456789012:federated-user/bob",
            "not an arn",
        ] {
            assert_eq!(identity_arn(unchanged), unchanged);
        }
    }

    #[test]
    fn long_messages_are_cut_and_kept_on_one_line() {
        let long = "word ".repeat(100);
        let short = shorten(&long, 50);
        assert_eq!(short.chars().count(), 50);
        assert!(short.ends_with('…'));
        assert_eq!(shorten("a\n  b\tc", 50), "a b c");
        let (_, text) = classify("X", &service(Some("Odd"), Some(&long), None, 500));
        assert!(text.chars().count() < MAX_MESSAGE_CHARS + 20, "{text}");
        assert!(!text.contains('\n'));
    }
}
