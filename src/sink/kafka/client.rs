//! librdkafka clients as the Kafka sink makes them: their configuration, the context that
//! routes their logs, statistics and MSK IAM tokens, and what their errors mean to the sink.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use super::config::{KafkaAuth, KafkaSinkConfig};
use super::events::KafkaEvents;

/// Whether librdkafka takes `key = value`; the reason otherwise, without the value (it may be
/// a secret).
pub fn check_property(key: &str, value: &str) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(key, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => Err(redact(&desc, value)),
        Err(e) => Err(redact(&e.to_string(), value)),
    }
}

/// `text` with every occurrence of `secret` masked.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

/// The properties every client of the sink starts from: brokers, the user's options, auth.
pub fn base_config(config: &KafkaSinkConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        // librdkafka's statistics feed the queue-depth and broker-RTT metrics.
        .set("statistics.interval.ms", "5000")
        .set_log_level(RDKafkaLogLevel::Warning);
    if config.auth == KafkaAuth::MskIam {
        c.set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "OAUTHBEARER");
    }
    for (k, v) in &config.options.0 {
        c.set(k, v);
    }
    c
}

/// Producer properties on top of `base_config`: the Java client's partitioner, so an item's
/// records land where a Java producer would put them; bounded queues.
pub fn producer_config(config: &KafkaSinkConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("partitioner", "murmur2_random")
        // Each producer buffers at most about two batches: memory stays bounded however many
        // shards a worker holds (README, "Kafka sink").
        .set(
            "queue.buffering.max.kbytes",
            ((config.max_bytes * 2).div_ceil(1024))
                .clamp(1024, 1_048_576)
                .to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            (config.max_records * 2).clamp(1000, 10_000_000).to_string(),
        )
        .set("enable.idempotence", "true");
    if config.exactly_once {
        c.set(
            "transaction.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        );
    }
    // The user's options win over these defaults (not over the protocol's own settings,
    // which they cannot name).
    let base = base_config(config, client_id);
    for (k, v) in base.config_map() {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Routes a client's logs to tracing, its statistics to metrics, and signs MSK IAM tokens.
#[derive(Clone)]
pub struct SinkContext {
    pub events: Arc<KafkaEvents>,
    pub signer: Option<Arc<MskIamSigner>>,
}

impl ClientContext for SinkContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection trouble is reported here and retried by librdkafka; the sink's own calls
        // see it as transient errors.
        tracing::warn!("kafka client: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        self.events.statistics(&statistics);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        match &self.signer {
            Some(signer) => signer.token(),
            None => Err(
                "sasl.mechanism OAUTHBEARER needs auth = \"msk-iam\" or sasl.oauthbearer.* options"
                    .into(),
            ),
        }
    }
}

impl ConsumerContext for SinkContext {}

/// Signs SASL/OAUTHBEARER tokens for Amazon MSK from the sink's AWS credentials; librdkafka
/// asks again before each token expires.
pub struct MskIamSigner {
    pub region: aws_config::Region,
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
    pub runtime: tokio::runtime::Handle,
}

impl MskIamSigner {
    fn token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        // librdkafka calls from its own thread; the signer is async, so it runs on the
        // runtime from a thread of its own (never blocking a runtime worker).
        let (region, credentials) = (self.region.clone(), self.credentials.clone());
        let runtime = self.runtime.clone();
        let signed = std::thread::spawn(move || {
            runtime.block_on(
                aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
                    region,
                    credentials,
                ),
            )
        })
        .join()
        .map_err(|_| "the MSK IAM signer panicked")?;
        let (token, lifetime_ms) = signed.map_err(|e| format!("MSK IAM token: {e}"))?;
        Ok(OAuthToken {
            token,
            principal_name: "shardbridge".into(),
            lifetime_ms,
        })
    }
}

/// What a failed Kafka call means for the batch in hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A newer producer with this transactional id exists: another worker owns the shard.
    Fenced,
    /// The record is larger than the producer or the topic accepts.
    TooLarge,
    /// The call may be made again as it is (a timeout, a broker that is down).
    Retriable,
    /// The transaction must be aborted, then the batch sent again.
    Abortable,
    /// The producer can do nothing more: a new one is made (it fences this one).
    ProducerBroken,
    /// No retry helps: credentials, authorisation, configuration.
    Fatal,
}

fn is_fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::InvalidTransactionTimeout
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::InvalidRecord
    )
}

pub fn classify(e: &KafkaError) -> Failure {
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => Failure::Fatal,
        KafkaError::Transaction(t) => {
            let code = t.code();
            if is_fenced(code) {
                Failure::Fenced
            } else if is_fatal_code(code) {
                Failure::Fatal
            } else if t.is_fatal() {
                Failure::ProducerBroken
            } else if t.txn_requires_abort() {
                Failure::Abortable
            } else if t.is_retriable() {
                Failure::Retriable
            } else {
                Failure::Abortable
            }
        }
        other => match other.rdkafka_error_code() {
            Some(c) if is_fenced(c) => Failure::Fenced,
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => Failure::TooLarge,
            Some(c) if is_fatal_code(c) => Failure::Fatal,
            Some(_) | None => Failure::Abortable,
        },
    }
}

/// How long a blocking client call may take.
pub fn call_timeout(config: &KafkaSinkConfig) -> Duration {
    Duration::from_millis(config.call_timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_checked_by_librdkafka_without_echoing_values() {
        assert!(check_property("linger.ms", "5").is_ok());
        assert!(check_property("sasl.password", "hunter2").is_ok());
        let e = check_property("linger.mss", "5").unwrap_err();
        assert!(e.contains("linger.mss"), "{e}");
        let e = check_property("linger.ms", "hunter2-soon").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn errors_are_classified() {
        use RDKafkaErrorCode as C;
        for (e, want) in [
            (
                KafkaError::MessageProduction(C::MessageSizeTooLarge),
                Failure::TooLarge,
            ),
            (
                KafkaError::MessageProduction(C::ProducerFenced),
                Failure::Fenced,
            ),
            (KafkaError::MessageProduction(C::Fenced), Failure::Fenced),
            (
                KafkaError::MessageProduction(C::TopicAuthorizationFailed),
                Failure::Fatal,
            ),
            (
                KafkaError::MessageProduction(C::MessageTimedOut),
                Failure::Abortable,
            ),
            (KafkaError::ClientCreation("x".into()), Failure::Fatal),
        ] {
            assert_eq!(classify(&e), want, "{e}");
        }
    }

    /// The token Amazon MSK takes: a presigned `kafka-cluster:Connect` URL, base64url, from the
    /// sink's credentials and region; librdkafka is told when it expires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn msk_iam_tokens_are_signed_from_the_credentials() {
        use base64::Engine as _;
        let signer = MskIamSigner {
            region: aws_config::Region::new("eu-west-1"),
            credentials: aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "t"),
            ),
            runtime: tokio::runtime::Handle::current(),
        };
        let token = tokio::task::spawn_blocking(move || signer.token().map_err(|e| e.to_string()))
            .await
            .unwrap()
            .unwrap();
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.token.trim_end_matches('='))
            .expect("base64url");
        let url = String::from_utf8(url).unwrap();
        assert!(
            url.starts_with("https://kafka.eu-west-1.amazonaws.com/"),
            "{url}"
        );
        assert!(url.contains("Action=kafka-cluster%3AConnect"), "{url}");
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE"), "{url}");
        assert!(
            !url.contains("secret"),
            "the secret key is not in the token"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(token.lifetime_ms > now, "expires in the future");
    }

    #[test]
    fn user_options_override_defaults_but_msk_iam_sets_its_mechanism() {
        let mut c: KafkaSinkConfig = crate::sink::kafka::tests::config("b:1", "t");
        c.options.0.insert("linger.ms".into(), "7".into());
        c.options
            .0
            .insert("partitioner".into(), "consistent_random".into());
        let p = producer_config(&c, "id");
        assert_eq!(p.get("linger.ms"), Some("7"));
        assert_eq!(p.get("partitioner"), Some("consistent_random"));
        assert_eq!(p.get("bootstrap.servers"), Some("b:1"));
        c.auth = KafkaAuth::MskIam;
        let p = producer_config(&c, "id");
        assert_eq!(p.get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
    }
}
