//! Kafka for the tests: the tansu broker of scripts/dev-servers.sh, topics made with rdkafka's
//! admin client, and a verifier that reads a topic's raw record batches. tansu does not list
//! aborted transactions in its Fetch answers (a read_committed consumer still sees records of
//! aborted transactions), so records are classified here from the control batches: a
//! transactional record counts as committed only once its producer's COMMIT marker follows it
//! in the partition. Nothing the connector logs or writes into headers is trusted for that.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The local Kafka broker (tansu). A test that cannot reach it fails.
pub fn bootstrap() -> String {
    let addr = std::env::var("SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP")
        .unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let sock = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP {addr}"));
    if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        panic!(
            "cannot reach the Kafka broker at {addr}: start the local servers with \
             `scripts/dev-servers.sh start` and `eval \"$(scripts/dev-servers.sh env)\"`"
        );
    }
    addr
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// One data record as stored.
#[derive(Clone, Debug)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub producer_id: i64,
    pub transactional: bool,
}

impl KafkaRecord {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A topic's records by what their transactions became.
#[derive(Debug, Default)]
pub struct TopicRead {
    /// Committed (or non-transactional) records, partition by partition in offset order.
    pub committed: Vec<KafkaRecord>,
    /// Records of aborted transactions.
    pub aborted: usize,
    /// Records of transactions with neither marker yet: still open.
    pub open: usize,
    pub commit_markers: usize,
    pub abort_markers: usize,
}

/// Reads every partition of `topic` to its end (blocking; call from spawn_blocking).
pub fn read_topic(bootstrap: &str, topic: &str, partitions: i32) -> TopicRead {
    let mut conn = Conn::open(bootstrap);
    let mut out = TopicRead::default();
    for p in 0..partitions {
        let mut pending: HashMap<i64, Vec<KafkaRecord>> = HashMap::new();
        let mut offset = 0i64;
        let mut empty = 0;
        loop {
            let (records, high_watermark) = conn.fetch(topic, p, offset);
            if records.is_empty() {
                // tansu may answer before its wait is over; the end is the high watermark.
                if offset >= high_watermark || empty >= 20 {
                    break;
                }
                empty += 1;
                continue;
            }
            empty = 0;
            for r in records {
                if r.offset < offset {
                    continue; // a batch is returned whole; skip what was read already
                }
                offset = r.offset + 1;
                if r.control {
                    let key = r.key.clone().unwrap_or_default();
                    assert!(key.len() >= 4, "control record key {key:?}");
                    let kind = i16::from_be_bytes([key[2], key[3]]);
                    let txn = pending.remove(&r.producer_id).unwrap_or_default();
                    match kind {
                        1 => {
                            out.commit_markers += 1;
                            out.committed.extend(txn);
                        }
                        0 => {
                            out.abort_markers += 1;
                            out.aborted += txn.len();
                        }
                        other => panic!("unknown control record type {other}"),
                    }
                    continue;
                }
                let record = KafkaRecord {
                    partition: p,
                    offset: r.offset,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                    headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                v.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    producer_id: r.producer_id,
                    transactional: r.transactional,
                };
                if r.transactional {
                    pending.entry(r.producer_id).or_default().push(record);
                } else {
                    out.committed.push(record);
                }
            }
        }
        out.open += pending.values().map(Vec::len).sum::<usize>();
    }
    out
}

struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn open(bootstrap: &str) -> Conn {
        let stream = TcpStream::connect(bootstrap).expect("connect to the Kafka broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn {
            stream,
            correlation: 0,
        }
    }

    /// One Fetch (v4, read_uncommitted) of a partition from `offset`: its raw records and the
    /// partition's high watermark.
    fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (Vec<kafka_protocol::records::Record>, i64) {
        const VERSION: i16 = 4;
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(VERSION)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_string("shardbridge-verifier".into())));
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(300)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_isolation_level(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(64 << 20)])]);
        let mut body = BytesMut::new();
        header.encode(&mut body, 1).unwrap();
        request.encode(&mut body, VERSION).unwrap();
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).expect("send Fetch");
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("Fetch answer");
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).expect("Fetch answer");
        let mut buf = Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut buf, 0).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        let response = FetchResponse::decode(&mut buf, VERSION).expect("a Fetch answer");
        assert_eq!(response.error_code, 0, "Fetch error");
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "Fetch {topic}/{partition}: error");
        let mut records = Vec::new();
        if let Some(raw) = &data.records {
            let mut raw = raw.clone();
            while raw.has_remaining() {
                match RecordBatchDecoder::decode(&mut raw) {
                    Ok(set) => records.extend(set.records),
                    // A batch cut short by the size limit: read from its start next time.
                    Err(_) => break,
                }
            }
        }
        (records, data.high_watermark)
    }
}
