//! An in-process shard source with a scripted list of faults, behind the same `ShardSource`
//! trait as DynamoDB Streams: for the error classes no local server produces on demand.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use shardbridge::source::record::{
    AttributeValue, ChangeRecord, OperationType, SourceIdentity, SourceRecord, StreamViewType,
};
use shardbridge::source::sequence::SequenceNumber;
use shardbridge::source::{
    IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError,
};

pub const STREAM: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/model/stream/2026-01-01T00:00:00.000";

/// What a `get_records` call does instead of answering.
#[derive(Clone, Debug)]
pub enum Fault {
    Expired,
    Throttled,
    Transient,
    /// Records below this index are trimmed away; the call fails with TrimmedDataAccess.
    TrimTo(usize),
    NotFound,
}

pub struct ScriptedShard {
    pub shard_id: String,
    /// Sequence numbers are `1000 + index`, so they are valid and ordered.
    pub records: usize,
    pub closed: bool,
    /// Keyed by the number of the get_records call (1-based) that fails.
    pub faults: BTreeMap<usize, Fault>,
    pub page_size: usize,
    /// Records change this many items, in turn (record i changes item `k{i % keys}`).
    pub keys: usize,
}

struct State {
    calls: usize,
    trim_horizon: usize,
    faults: BTreeMap<usize, Fault>,
    /// Positions of iterators handed out, by token.
    iterators: Vec<usize>,
    pub opened: VecDeque<IteratorPosition>,
}

pub struct ScriptedSource {
    shard: ScriptedShard,
    state: Mutex<State>,
}

pub fn seq_of(index: usize) -> SequenceNumber {
    SequenceNumber::parse(&(1000 + index).to_string()).unwrap()
}

pub fn record(shard: &str, index: usize, keys: usize) -> ChangeRecord {
    let keys = BTreeMap::from([(
        "id".to_string(),
        AttributeValue::S(format!("k{}", index % keys.max(1))),
    )]);
    ChangeRecord {
        event_id: format!("event-{index}"),
        operation: OperationType::Modify,
        event_version: "1.1".into(),
        aws_region: "us-east-1".into(),
        table_name: "model".into(),
        source: SourceIdentity {
            stream_arn: STREAM.into(),
            shard_id: shard.into(),
            sequence_number: seq_of(index),
        },
        approximate_creation_millis: Some(1_700_000_000_000 + index as i64),
        keys: keys.clone(),
        new_image: Some(keys),
        old_image: None,
        size_bytes: 10,
        view_type: StreamViewType::NewImage,
        user_identity: None,
    }
}

impl ScriptedSource {
    pub fn new(shard: ScriptedShard) -> Self {
        let faults = shard.faults.clone();
        ScriptedSource {
            shard,
            state: Mutex::new(State {
                calls: 0,
                trim_horizon: 0,
                faults,
                iterators: Vec::new(),
                opened: VecDeque::new(),
            }),
        }
    }

    pub fn opened(&self) -> Vec<IteratorPosition> {
        self.state.lock().unwrap().opened.iter().cloned().collect()
    }

    fn iterator(&self, state: &mut State, position: usize) -> ShardIterator {
        state.iterators.push(position);
        ShardIterator {
            shard_id: self.shard.shard_id.clone(),
            token: (state.iterators.len() - 1).to_string(),
        }
    }
}

#[async_trait]
impl ShardSource for ScriptedSource {
    fn stream_arn(&self) -> &str {
        STREAM
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        Ok(vec![Shard {
            shard_id: self.shard.shard_id.clone(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            starting_sequence_number: Some(seq_of(0)),
            ending_sequence_number: self.shard.closed.then(|| seq_of(self.shard.records - 1)),
        }])
    }

    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        assert_eq!(shard_id, self.shard.shard_id);
        let mut s = self.state.lock().unwrap();
        s.opened.push_back(position.clone());
        let at = match position {
            IteratorPosition::TrimHorizon | IteratorPosition::AtTimestamp(_) => s.trim_horizon,
            IteratorPosition::Latest => self.shard.records,
            IteratorPosition::AfterSequenceNumber(seq) => {
                let index: usize = seq.as_str().parse::<usize>().unwrap() - 1000 + 1;
                if index < s.trim_horizon {
                    return Err(SourceError::TrimmedData(format!("{seq} is trimmed")));
                }
                index
            }
        };
        Ok(self.iterator(&mut s, at))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        let mut s = self.state.lock().unwrap();
        s.calls += 1;
        let call = s.calls;
        if let Some(fault) = s.faults.remove(&call) {
            return Err(match fault {
                Fault::Expired => SourceError::ExpiredIterator,
                Fault::Throttled => SourceError::Throttled("LimitExceededException".into()),
                Fault::Transient => SourceError::Transient("HTTP 500".into()),
                Fault::TrimTo(horizon) => {
                    s.trim_horizon = horizon;
                    SourceError::TrimmedData("TrimmedDataAccessException".into())
                }
                Fault::NotFound => SourceError::StreamNotFound("ResourceNotFoundException".into()),
            });
        }
        let at = s.iterators[iterator.token.parse::<usize>().unwrap()];
        let at = at.max(s.trim_horizon);
        let end = (at + self.shard.page_size.min(limit as usize)).min(self.shard.records);
        let records = (at..end)
            .map(|i| SourceRecord::DynamoDb(record(&self.shard.shard_id, i, self.shard.keys)))
            .collect();
        let next_iterator = if self.shard.closed && end == self.shard.records {
            None
        } else {
            Some(self.iterator(&mut s, end))
        };
        Ok(RecordPage {
            records,
            next_iterator,
            millis_behind_latest: None,
        })
    }
}
