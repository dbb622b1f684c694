//! The Kafka sink's `[sink]` table, with its defaults and checks.

use std::collections::BTreeMap;

use super::super::partition_key::PartitionKeyRule;
use super::topic::TopicTemplate;
use crate::aws::AwsSettings;
use crate::settings::TableReader;

/// Each record's Kafka key (`key`): which records share a partition and an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaKey {
    /// `item-key`, `shard` or `attribute:NAME`: as for the Kinesis sink's partition keys.
    Rule(PartitionKeyRule),
    /// No key: records spread over the partitions, no order promised.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaAuth {
    /// Whatever `[sink.options]` says (security.protocol, sasl.*, ssl.*).
    Options,
    /// Amazon MSK IAM: SASL/OAUTHBEARER tokens signed from the AWS credential chain.
    MskIam,
}

/// librdkafka properties given in `[sink.options]`, passed as they are. They may hold
/// secrets (sasl.password, ssl.key.password), so their values are never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions(pub BTreeMap<String, String>);

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Properties the protocol sets itself; `[sink.options]` may not.
const OWNED: [(&str, &str); 8] = [
    ("transactional.id", "derived from the connector and shard"),
    ("enable.idempotence", "set by exactly_once"),
    ("transaction.timeout.ms", "use transaction_timeout_ms"),
    ("isolation.level", "a consumer setting the protocol owns"),
    ("bootstrap.servers", "use brokers"),
    ("metadata.broker.list", "use brokers"),
    (
        "group.id",
        "the commit record's group is derived from the connector and shard",
    ),
    ("enable.auto.commit", "a consumer setting the protocol owns"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: TopicTemplate,
    pub key: KafkaKey,
    /// Transactions (exactly once); false: an idempotent producer (at least once).
    pub exactly_once: bool,
    pub transaction_timeout_ms: u64,
    /// How long one call to the cluster (init, commit, abort, offset fetch) may take.
    pub call_timeout_ms: u64,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval_ms: u64,
    pub auth: KafkaAuth,
    pub options: ClientOptions,
}

pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;
/// One batch is one transaction: big enough that its fixed cost (two lease-table writes, the
/// commit round trips) is small per record, small enough for low latency.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 200;

impl KafkaSinkConfig {
    /// Reads the `[sink]` table of `type = "kafka"` (the type is read by the caller).
    pub fn read(
        t: &mut TableReader,
        global_aws: &AwsSettings,
    ) -> Option<(KafkaSinkConfig, AwsSettings)> {
        let brokers = t.string("brokers");
        if brokers.as_deref().is_some_and(|b| b.trim().is_empty()) {
            t.problem("brokers", "empty: give host:port[,host:port...]");
        }
        let topic = t
            .string("topic")
            .and_then(|s| match TopicTemplate::parse(&s) {
                Ok(tpl) => Some(tpl),
                Err(e) => {
                    t.problem("topic", e);
                    None
                }
            });
        let key = match t.opt_string("key") {
            None => Some(KafkaKey::Rule(PartitionKeyRule::ItemKey)),
            Some(s) if s == "none" => Some(KafkaKey::None),
            Some(s) => match PartitionKeyRule::parse(&s) {
                Some(rule) if rule.keeps_order() => Some(KafkaKey::Rule(rule)),
                _ => {
                    t.problem(
                        "key",
                        format!(
                            "{s:?} is not one of \"item-key\", \"shard\", \"attribute:NAME\", \"none\""
                        ),
                    );
                    None
                }
            },
        };
        let exactly_once = t.opt_bool("exactly_once").unwrap_or(true);
        let transaction_timeout_ms = t
            .opt_u64("transaction_timeout_ms", 1_000, 900_000)
            .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT_MS);
        let call_timeout_ms = t
            .opt_u64("call_timeout_ms", 100, 900_000)
            .unwrap_or(DEFAULT_CALL_TIMEOUT_MS);
        let (max_records, max_bytes, max_interval_ms) = super::super::read_batch_limits(
            t,
            (
                DEFAULT_MAX_RECORDS,
                DEFAULT_MAX_BYTES,
                DEFAULT_MAX_INTERVAL_MS,
            ),
        );
        let auth = if t.has("auth") {
            t.choice("auth", &[("msk-iam", KafkaAuth::MskIam)])
        } else {
            Some(KafkaAuth::Options)
        };
        let options = read_options(t, auth == Some(KafkaAuth::MskIam));
        let aws = AwsSettings::read(t, "aws").or(global_aws);
        Some((
            KafkaSinkConfig {
                brokers: brokers?,
                topic: topic?,
                key: key?,
                exactly_once,
                transaction_timeout_ms,
                call_timeout_ms,
                max_records,
                max_bytes,
                max_interval_ms,
                auth: auth?,
                options: options?,
            },
            aws,
        ))
    }
}

/// `[sink.options]`: every property is checked by librdkafka itself (a misspelt one is named);
/// the ones the protocol owns are refused. Problems name the key, never the value.
fn read_options(t: &mut TableReader, msk_iam: bool) -> Option<ClientOptions> {
    let Some(mut o) = t.opt_table("options") else {
        return Some(ClientOptions::default());
    };
    let mut options = BTreeMap::new();
    let mut ok = true;
    for key in o.keys() {
        let Some(value) = o.scalar_text(&key) else {
            ok = false;
            continue;
        };
        let owned = OWNED
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, why)| why.to_string())
            .or_else(|| {
                (msk_iam && (key == "sasl.mechanism" || key == "sasl.mechanisms"))
                    .then(|| "auth = \"msk-iam\" sets it to OAUTHBEARER".to_string())
            });
        if let Some(why) = owned {
            o.problem(&key, format!("set by shardbridge, not here ({why})"));
            ok = false;
            continue;
        }
        if let Err(why) = super::client::check_property(&key, &value) {
            o.problem(&key, why);
            ok = false;
            continue;
        }
        options.insert(key, value);
    }
    o.finish();
    ok.then_some(ClientOptions(options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Problems;

    fn read(toml: &str) -> (Option<KafkaSinkConfig>, Vec<String>) {
        let value = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .cache;
        let mut problems = Problems::default();
        let mut t = TableReader::from_value("sink".into(), value, &mut problems);
        let got = KafkaSinkConfig::read(&mut t, &AwsSettings::default()).map(|(c, _)| c);
        t.finish();
        let lines = match problems.into_result(()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
        };
        (got, lines)
    }

    #[test]
    fn defaults() {
        let (c, problems) = read("brokers = \"b:9092\"\ntopic = \"t\"");
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        assert_eq!(c.key, KafkaKey::Rule(PartitionKeyRule::ItemKey));
        assert!(c.exactly_once);
        assert_eq!(c.transaction_timeout_ms, 60_000);
        assert_eq!((c.max_records, c.max_interval_ms), (10_000, 200));
        assert_eq!(c.auth, KafkaAuth::Options);
    }

    #[test]
    fn keys_and_options() {
        let (c, problems) = read(
            "brokers = \"b:9092\"\ntopic = \"cdc.{table}\"\nkey = \"attribute:tenant\"\n\
             exactly_once = false\n[options]\n\"compression.type\" = \"zstd\"\n\"linger.ms\" = 5\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        assert_eq!(
            c.key,
            KafkaKey::Rule(PartitionKeyRule::Attribute("tenant".into()))
        );
        assert!(!c.exactly_once);
        assert_eq!(c.options.0["linger.ms"], "5");
        let (c, _) = read("brokers = \"b\"\ntopic = \"t\"\nkey = \"none\"");
        assert_eq!(c.unwrap().key, KafkaKey::None);
    }

    #[test]
    fn problems_name_the_key_and_never_a_secret() {
        let (c, problems) = read(
            "brokers = \"b:9092\"\ntopic = \"t t\"\nkey = \"random\"\nauth = \"msk-iam\"\n[options]\n\
             \"transactional.id\" = \"mine\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
             \"sasl.pasword\" = \"hunter2-secret\"\n\"compression.type\" = \"hunter3-secret\"\n",
        );
        assert!(c.is_none());
        let all = problems.join("\n");
        for expected in [
            "sink.topic: ",
            "sink.key: \"random\" is not one of",
            "sink.options.transactional.id: set by shardbridge",
            "sink.options.sasl.mechanism: set by shardbridge",
            "sink.options.sasl.pasword: ",
            "sink.options.compression.type: ",
        ] {
            assert!(all.contains(expected), "{expected:?} in:\n{all}");
        }
        assert!(!all.contains("hunter"), "a value was printed:\n{all}");
        assert!(!format!(
            "{:?}",
            ClientOptions([("sasl.password".to_string(), "hunter2".to_string())].into())
        )
        .contains("hunter2"));
    }

    #[test]
    fn missing_keys_are_named() {
        let (c, problems) = read("exactly_once = true");
        assert!(c.is_none());
        assert!(
            problems.contains(&"sink.brokers: missing".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"sink.topic: missing".to_string()),
            "{problems:?}"
        );
    }
}
