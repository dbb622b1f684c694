//! AWS SDK configuration from `[aws]` settings (region, endpoint override, assumed role), and
//! the classes of AWS errors that callers branch on.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

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

/// Classifies by error code rather than by each operation's generated enum, so that every
/// operation shares one table and unknown future codes still land in a class.
pub fn classify<E, R>(operation: &str, err: &SdkError<E, R>) -> (AwsErrorClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    use AwsErrorClass::*;
    let detail = format!("{operation}: {}", DisplayErrorContext(err));
    let class = match err {
        SdkError::ServiceError(service) => match service.err().code().unwrap_or("") {
            "ConditionalCheckFailedException" => ConditionFailed,
            "ExpiredIteratorException" => ExpiredIterator,
            "TrimmedDataAccessException" => TrimmedData,
            "LimitExceededException"
            | "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "KMSThrottlingException"
            | "SlowDown" => Throttled,
            "ResourceNotFoundException" => NotFound,
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "ValidationException"
            | "InvalidSignatureException"
            | "MissingAuthenticationToken"
            | "InvalidArgumentException"
            // A broken KMS key is not fixed by retrying.
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMSOptInRequired" => Fatal,
            _ => Transient,
        },
        SdkError::DispatchFailure(d) if d.is_user() => Fatal,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Transient
        }
        // Construction failures (missing credentials or region): nothing a retry fixes.
        _ => Fatal,
    };
    (class, detail)
}
