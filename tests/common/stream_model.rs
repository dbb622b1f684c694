//! A deterministic, in-process model of a shard-based stream (DynamoDB Streams / Kinesis) behind
//! the same `ShardSource` trait as the real sources: for the lineage edge cases no emulator
//! produces (DynamoDB shard rollover, deep split/merge trees, parents trimmed before they were
//! read).
//!
//! - Topology: root shards partition a hash-key space; a shard may roll over (DynamoDB: it
//!   closes and one child continues its range), split (Kinesis: two children share its range) or
//!   merge with its neighbour (Kinesis: one child, `adjacent_parent_shard_id`).
//! - Writes: items `k0..kN`, each with a fixed hash; a write goes to the open shard whose range
//!   holds the item's hash, so an item's writes move from parent to child at every reshard. The
//!   record carries the item key in `keys` and its version (1, 2, …) in `new_image`. Sequence
//!   numbers are one stream-wide, increasing counter with random gaps: increasing within a
//!   shard and from parent to child, as in the real services.
//! - Reads: iterators are positions; a closed shard's last page has no next iterator (SHARD_END)
//!   once every record was returned; an open shard always returns one, often with an empty page.
//!   TRIM_HORIZON, LATEST and AFTER_SEQUENCE_NUMBER positions; reading trimmed records fails with
//!   TrimmedData; a shard trimmed away entirely is no longer listed and opening it fails with
//!   ResourceNotFound (StreamNotFound), as the real services answer.
//! - Faults: Throttled, Transient and ExpiredIterator at a seeded rate (never StreamNotFound or
//!   Fatal, which stop a connector by design), random latencies, short and empty pages.
//!
//! Everything the writer does (topology, writes, sequence numbers) is a pure function of the
//! random generator the caller passes in, so a seed replays the same stream. The model also
//! remembers which records were ever returned by `get_records`, which were trimmed (and whether
//! they had been read by then), and any misuse of the API it saw (`violations`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use shardbridge::source::record::{
    AttributeValue, ChangeRecord, OperationType, SourceIdentity, SourceRecord, StreamViewType,
};
use shardbridge::source::sequence::SequenceNumber;
use shardbridge::source::{
    IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError,
};
use tokio::time::Instant;

pub const MODEL_STREAM: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/lineage/stream/2026-01-01T00:00:00.000";

/// The attribute holding an item's key, and the one holding its version in `new_image`.
pub const KEY_ATTR: &str = "id";
pub const VERSION_ATTR: &str = "v";

/// The size of the hash-key space the shards partition.
const HASH_SPACE: u64 = 1 << 32;

/// Calls at one virtual instant beyond which the model reports a hot loop (and starts failing
/// calls, so that back-off sleeps let virtual time move again).
const HOT_LOOP_CALLS: u32 = 50_000;

// ---------------------------------------------------------------------------------------------
// Random numbers

/// splitmix64: small, fast, and the same sequence everywhere for a given seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// An independent generator for one purpose (`stream` names it), derived from a seed.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut g = SplitMix64(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        g.next_u64();
        g
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// How shard ids look: in creation order (Kinesis), with a creation timestamp (DynamoDB), or
/// random (so that no code may rely on ids sorting parents before children).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdStyle {
    Kinesis,
    DynamoDb,
    Random,
}

/// Deliberate defects, to prove that the property tests can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    None,
    /// `list_shards` reports no parents: children are read before their parents are done.
    HideParents,
    /// `get_records` silently leaves out one record (item k0's first version).
    DropRecord,
    /// `get_records` returns one page's records twice (a duplicate the source never makes).
    RepeatPage,
}

impl Sabotage {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "none" => Sabotage::None,
            "hide_parents" => Sabotage::HideParents,
            "drop_record" => Sabotage::DropRecord,
            "repeat_page" => Sabotage::RepeatPage,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ModelParams {
    pub seed: u64,
    /// Items k0..k{items-1}.
    pub items: usize,
    pub roots: usize,
    /// Splits only while fewer shards than this are open.
    pub max_open: usize,
    /// Relative weights of the reshard kinds.
    pub rollover_weight: u64,
    pub split_weight: u64,
    pub merge_weight: u64,
    /// Per-mille rate of injected Throttled / Transient / ExpiredIterator errors per call.
    pub error_per_mille: u32,
    /// Per-mille rate of empty pages (with a next iterator) although records are there.
    pub empty_page_per_mille: u32,
    /// Largest gap between consecutive sequence numbers.
    pub max_sequence_gap: u64,
    /// The first sequence number (chosen so that the number of digits changes mid-run).
    pub first_sequence: u128,
    pub id_style: IdStyle,
    /// Upper bound of the random latency of a source call.
    pub max_latency_ms: u64,
    pub sabotage: Sabotage,
}

impl ModelParams {
    /// Random parameters for a seed.
    pub fn from_seed(seed: u64) -> Self {
        let mut g = SplitMix64::derive(seed, 1);
        let (rollover_weight, split_weight, merge_weight) = match g.below(4) {
            0 => (1, 0, 0), // DynamoDB rollover only
            1 => (0, 3, 2), // Kinesis splits and merges
            2 => (2, 2, 0), // DynamoDB rollover and partition splits
            _ => (1, 2, 2), // everything
        };
        let first_sequence = match g.below(4) {
            // A few digits, crossing to one more digit early.
            0 => 90 + u128::from(g.below(10)),
            1 => 99_000 + u128::from(g.below(900)),
            // DynamoDB-like 21 digits.
            2 => 100_000_000_000_000_000_000 + u128::from(g.next_u64()),
            // Close to 39 digits: the count of digits changes near the end of u128's range.
            _ => 99_999_999_999_999_999_999_999_999_999_000_000 - u128::from(g.below(5_000)),
        };
        ModelParams {
            seed,
            items: g.range(3, 24) as usize,
            roots: g.range(1, 3) as usize,
            max_open: g.range(2, 6) as usize,
            rollover_weight,
            split_weight,
            merge_weight,
            error_per_mille: *g.pick(&[0, 5, 15, 30]),
            empty_page_per_mille: *g.pick(&[0, 20, 100]),
            max_sequence_gap: *g.pick(&[1, 10, 1000]),
            first_sequence,
            id_style: *g.pick(&[IdStyle::Kinesis, IdStyle::DynamoDb, IdStyle::Random]),
            max_latency_ms: *g.pick(&[0, 3, 20]),
            sabotage: Sabotage::None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the model reports

/// A record as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenRecord {
    pub shard: String,
    pub seq: u128,
    pub key: usize,
    pub version: u64,
    /// Virtual milliseconds since the model was created.
    pub written_at_ms: u64,
    /// Whether `get_records` ever returned it.
    pub read: bool,
}

/// A record trimmed past retention, and whether `get_records` had ever returned it by then.
#[derive(Clone, Debug)]
pub struct TrimmedRecord {
    pub record: WrittenRecord,
    pub read_before_trim: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    pub shards: usize,
    pub rollovers: usize,
    pub splits: usize,
    pub merges: usize,
    pub shards_trimmed_away: usize,
    pub injected_errors: usize,
    pub source_calls: usize,
    pub expired_served: usize,
    pub trimmed_data_served: usize,
    pub not_found_served: usize,
}

pub fn key_name(key: usize) -> String {
    format!("k{key}")
}

// ---------------------------------------------------------------------------------------------
// State

struct Rec {
    seq: u128,
    key: usize,
    version: u64,
    millis: u64,
    read: bool,
}

struct ShardState {
    id: String,
    parent: Option<usize>,
    adjacent: Option<usize>,
    /// Hash range `lo..hi`.
    lo: u64,
    hi: u64,
    starting_seq: u128,
    ending_seq: Option<u128>,
    recs: Vec<Rec>,
    /// `recs[..trimmed]` are gone.
    trimmed: usize,
    /// Trimmed entirely: no longer listed, cannot be opened.
    gone: bool,
    /// When `get_records` first answered SHARD_END for it.
    end_served_at: Option<Instant>,
}

impl ShardState {
    fn is_open(&self) -> bool {
        self.ending_seq.is_none() && !self.gone
    }
}

struct State {
    shards: Vec<ShardState>,
    by_id: HashMap<String, usize>,
    next_seq: u128,
    versions: Vec<u64>,
    fault: SplitMix64,
    trimmed: Vec<TrimmedRecord>,
    violations: Vec<String>,
    stats: ModelStats,
    iterator_serial: u64,
    hot_at: Option<Instant>,
    hot_calls: u32,
    hot_reported: bool,
    /// Sabotage bookkeeping.
    dropped: Option<u128>,
    repeated: bool,
}

pub struct StreamModel {
    params: ModelParams,
    created: Instant,
    /// Each item's fixed hash in the key space.
    hashes: Vec<u64>,
    state: Mutex<State>,
}

/// Where an iterator points: shard index and record index.
fn token(serial: u64, shard: usize, pos: usize) -> String {
    format!("{shard}:{pos}:{serial}")
}

fn parse_token(t: &str) -> Option<(usize, usize)> {
    let mut parts = t.split(':');
    let shard = parts.next()?.parse().ok()?;
    let pos = parts.next()?.parse().ok()?;
    Some((shard, pos))
}

fn seq_number(seq: u128) -> SequenceNumber {
    SequenceNumber::parse(&seq.to_string()).expect("a decimal number")
}

/// The u128 value of a sequence number the connector hands back (None when it is too long to be
/// one of ours).
fn seq_value(s: &SequenceNumber) -> Option<u128> {
    s.as_str().parse().ok()
}

impl StreamModel {
    /// A stream with `params.roots` open root shards and no records.
    pub fn new(params: ModelParams) -> Self {
        let mut g = SplitMix64::derive(params.seed, 2);
        let hashes = (0..params.items).map(|_| g.below(HASH_SPACE)).collect();
        let model = StreamModel {
            created: Instant::now(),
            hashes,
            state: Mutex::new(State {
                shards: Vec::new(),
                by_id: HashMap::new(),
                next_seq: params.first_sequence,
                versions: vec![0; params.items],
                fault: SplitMix64::derive(params.seed, 3),
                trimmed: Vec::new(),
                violations: Vec::new(),
                stats: ModelStats::default(),
                iterator_serial: 0,
                hot_at: None,
                hot_calls: 0,
                hot_reported: false,
                dropped: None,
                repeated: false,
            }),
            params,
        };
        {
            let mut s = model.lock();
            let roots = model.params.roots as u64;
            let mut g = SplitMix64::derive(model.params.seed, 4);
            for i in 0..roots {
                let lo = HASH_SPACE / roots * i;
                let hi = if i + 1 == roots {
                    HASH_SPACE
                } else {
                    HASH_SPACE / roots * (i + 1)
                };
                model.add_shard(&mut s, &mut g, None, None, lo, hi);
            }
        }
        model
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }

    fn add_shard(
        &self,
        s: &mut State,
        g: &mut SplitMix64,
        parent: Option<usize>,
        adjacent: Option<usize>,
        lo: u64,
        hi: u64,
    ) -> usize {
        let n = s.shards.len();
        let id = match self.params.id_style {
            IdStyle::Kinesis => format!("shardId-{n:012}"),
            IdStyle::DynamoDb => format!(
                "shardId-{:020}-{:08x}",
                1_700_000_000_000 + self.now_ms() * 1000 + n as u64,
                g.next_u64() as u32
            ),
            IdStyle::Random => format!("shardId-{:016x}", g.next_u64()),
        };
        s.by_id.insert(id.clone(), n);
        s.shards.push(ShardState {
            id,
            parent,
            adjacent,
            lo,
            hi,
            starting_seq: s.next_seq,
            ending_seq: None,
            recs: Vec::new(),
            trimmed: 0,
            gone: false,
            end_served_at: None,
        });
        s.stats.shards += 1;
        n
    }

    fn take_seq(&self, s: &mut State, g: &mut SplitMix64) -> u128 {
        let seq = s.next_seq;
        s.next_seq += u128::from(g.range(1, self.params.max_sequence_gap));
        seq
    }

    fn close(&self, s: &mut State, g: &mut SplitMix64, shard: usize) {
        let end = match s.shards[shard].recs.last() {
            Some(r) => r.seq,
            // An empty shard still ends somewhere after it started.
            None => self.take_seq(s, g),
        };
        s.shards[shard].ending_seq = Some(end);
    }

    fn open_shards(s: &State) -> Vec<usize> {
        let mut open: Vec<usize> = (0..s.shards.len())
            .filter(|&i| s.shards[i].is_open())
            .collect();
        open.sort_by_key(|&i| s.shards[i].lo);
        open
    }

    // -- the writer's side ----------------------------------------------------------------------

    /// Writes the next version of item `key` to the shard that owns its hash now.
    pub fn write(&self, g: &mut SplitMix64, key: usize) -> WrittenRecord {
        let mut s = self.lock();
        let hash = self.hashes[key];
        let shard = Self::open_shards(&s)
            .into_iter()
            .find(|&i| s.shards[i].lo <= hash && hash < s.shards[i].hi)
            .expect("the open shards cover the key space");
        s.versions[key] += 1;
        let version = s.versions[key];
        let seq = self.take_seq(&mut s, g);
        let millis = self.now_ms();
        s.shards[shard].recs.push(Rec {
            seq,
            key,
            version,
            millis,
            read: false,
        });
        WrittenRecord {
            shard: s.shards[shard].id.clone(),
            seq,
            key,
            version,
            written_at_ms: millis,
            read: false,
        }
    }

    /// Writes `n` random items.
    pub fn write_random(&self, g: &mut SplitMix64, n: usize) {
        for _ in 0..n {
            let key = g.below(self.params.items as u64) as usize;
            self.write(g, key);
        }
    }

    /// One reshard of a kind chosen by the weights; a description of what happened, or None
    /// when none of the kinds applies now.
    pub fn reshard(&self, g: &mut SplitMix64) -> Option<String> {
        let p = &self.params;
        let total = p.rollover_weight + p.split_weight + p.merge_weight;
        let roll = g.below(total);
        let mut s = self.lock();
        let open = Self::open_shards(&s);
        if roll < p.rollover_weight {
            let victim = *g.pick(&open);
            Some(self.rollover(&mut s, g, victim))
        } else if roll < p.rollover_weight + p.split_weight {
            let splittable: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&i| s.shards[i].hi - s.shards[i].lo >= 2)
                .collect();
            if open.len() >= p.max_open || splittable.is_empty() {
                // Too many shards: DynamoDB still rolls shards over.
                let victim = *g.pick(&open);
                return Some(self.rollover(&mut s, g, victim));
            }
            let victim = *g.pick(&splittable);
            Some(self.split(&mut s, g, victim))
        } else {
            if open.len() < 2 {
                return None;
            }
            let i = g.below(open.len() as u64 - 1) as usize;
            Some(self.merge(&mut s, g, open[i], open[i + 1]))
        }
    }

    fn rollover(&self, s: &mut State, g: &mut SplitMix64, shard: usize) -> String {
        self.close(s, g, shard);
        let (lo, hi) = (s.shards[shard].lo, s.shards[shard].hi);
        let child = self.add_shard(s, g, Some(shard), None, lo, hi);
        s.stats.rollovers += 1;
        format!("rollover {} -> {}", s.shards[shard].id, s.shards[child].id)
    }

    fn split(&self, s: &mut State, g: &mut SplitMix64, shard: usize) -> String {
        self.close(s, g, shard);
        let (lo, hi) = (s.shards[shard].lo, s.shards[shard].hi);
        let mid = lo + 1 + g.below(hi - lo - 1);
        let a = self.add_shard(s, g, Some(shard), None, lo, mid);
        let b = self.add_shard(s, g, Some(shard), None, mid, hi);
        s.stats.splits += 1;
        format!(
            "split {} -> {}, {}",
            s.shards[shard].id, s.shards[a].id, s.shards[b].id
        )
    }

    fn merge(&self, s: &mut State, g: &mut SplitMix64, left: usize, right: usize) -> String {
        assert_eq!(s.shards[left].hi, s.shards[right].lo, "adjacent shards");
        self.close(s, g, left);
        self.close(s, g, right);
        let (lo, hi) = (s.shards[left].lo, s.shards[right].hi);
        let child = self.add_shard(s, g, Some(left), Some(right), lo, hi);
        s.stats.merges += 1;
        format!(
            "merge {} + {} -> {}",
            s.shards[left].id, s.shards[right].id, s.shards[child].id
        )
    }

    /// The sequence number the next record will get (at least): a trim cut-off.
    pub fn next_sequence(&self) -> u128 {
        self.lock().next_seq
    }

    /// Retention: every record with a sequence number below `cutoff` is trimmed; a closed shard
    /// left without records (and ended below the cut-off) disappears from the stream. Returns
    /// the shards trimmed away.
    pub fn trim_before(&self, cutoff: u128) -> Vec<String> {
        let mut s = self.lock();
        let mut gone = Vec::new();
        for i in 0..s.shards.len() {
            if s.shards[i].gone {
                continue;
            }
            let upto = s.shards[i].recs.partition_point(|r| r.seq < cutoff);
            Self::trim_records(&mut s, i, upto);
            let sh = &s.shards[i];
            if sh.ending_seq.is_some_and(|e| e < cutoff) && sh.trimmed == sh.recs.len() {
                s.shards[i].gone = true;
                s.stats.shards_trimmed_away += 1;
                gone.push(s.shards[i].id.clone());
            }
        }
        gone
    }

    /// Retention by age: trims every record written more than `age` ago (see `trim_before`).
    pub fn trim_older_than(&self, age: Duration) -> Vec<String> {
        let Some(limit) = self.now_ms().checked_sub(age.as_millis() as u64) else {
            return Vec::new();
        };
        let cutoff = {
            let s = self.lock();
            // Sequence numbers grow with time: the first record young enough is the cut-off.
            s.shards
                .iter()
                .flat_map(|sh| sh.recs.iter())
                .filter(|r| r.millis >= limit)
                .map(|r| r.seq)
                .min()
                .unwrap_or(s.next_seq)
        };
        self.trim_before(cutoff)
    }

    /// Retention of finished shards: a closed shard whose SHARD_END was served at least `grace`
    /// ago disappears with its records (all of which had been read). Returns those shards.
    pub fn trim_finished(&self, grace: Duration) -> Vec<String> {
        let mut s = self.lock();
        let now = Instant::now();
        let mut gone = Vec::new();
        for i in 0..s.shards.len() {
            let sh = &s.shards[i];
            if sh.gone || !sh.end_served_at.is_some_and(|t| now >= t + grace) {
                continue;
            }
            let n = sh.recs.len();
            Self::trim_records(&mut s, i, n);
            s.shards[i].gone = true;
            s.stats.shards_trimmed_away += 1;
            gone.push(s.shards[i].id.clone());
        }
        gone
    }

    fn trim_records(s: &mut State, shard: usize, upto: usize) {
        let from = s.shards[shard].trimmed;
        if upto <= from {
            return;
        }
        for r in &s.shards[shard].recs[from..upto] {
            let record = WrittenRecord {
                shard: s.shards[shard].id.clone(),
                seq: r.seq,
                key: r.key,
                version: r.version,
                written_at_ms: r.millis,
                read: r.read,
            };
            let read_before_trim = r.read;
            s.trimmed.push(TrimmedRecord {
                record,
                read_before_trim,
            });
        }
        s.shards[shard].trimmed = upto;
    }

    // -- what the test reads back --------------------------------------------------------------

    /// Every record written, in sequence order.
    pub fn written(&self) -> Vec<WrittenRecord> {
        let s = self.lock();
        let mut out: Vec<WrittenRecord> = s
            .shards
            .iter()
            .flat_map(|sh| {
                sh.recs.iter().map(|r| WrittenRecord {
                    shard: sh.id.clone(),
                    seq: r.seq,
                    key: r.key,
                    version: r.version,
                    written_at_ms: r.millis,
                    read: r.read,
                })
            })
            .collect();
        out.sort_by_key(|r| r.seq);
        out
    }

    pub fn written_count(&self) -> usize {
        self.lock().shards.iter().map(|s| s.recs.len()).sum()
    }

    pub fn trimmed(&self) -> Vec<TrimmedRecord> {
        self.lock().trimmed.clone()
    }

    /// Misuse of the API the model saw (never expected from a correct connector).
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn stats(&self) -> ModelStats {
        self.lock().stats.clone()
    }

    /// Each shard's parents (as the stream reports them, without sabotage): shard → parents.
    pub fn lineage(&self) -> BTreeMap<String, Vec<String>> {
        let s = self.lock();
        s.shards
            .iter()
            .map(|sh| {
                let parents = sh
                    .parent
                    .iter()
                    .chain(sh.adjacent.iter())
                    .map(|&p| s.shards[p].id.clone())
                    .collect();
                (sh.id.clone(), parents)
            })
            .collect()
    }

    /// The shards trimmed away entirely (no longer listed).
    pub fn gone(&self) -> std::collections::HashSet<String> {
        let s = self.lock();
        s.shards
            .iter()
            .filter(|sh| sh.gone)
            .map(|sh| sh.id.clone())
            .collect()
    }

    /// One line per shard, for failure reports.
    pub fn describe(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        for sh in &s.shards {
            let parents: Vec<&str> = sh
                .parent
                .iter()
                .chain(sh.adjacent.iter())
                .map(|&p| s.shards[p].id.as_str())
                .collect();
            let seqs = match (sh.recs.first(), sh.recs.last()) {
                (Some(a), Some(b)) => format!("{}..={}", a.seq, b.seq),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "  {} parents={:?} range={:08x}..{:08x} records={} seqs={} trimmed={} {}{}\n",
                sh.id,
                parents,
                sh.lo,
                sh.hi,
                sh.recs.len(),
                seqs,
                sh.trimmed,
                if sh.ending_seq.is_some() {
                    "closed"
                } else {
                    "open"
                },
                if sh.gone { " GONE" } else { "" },
            ));
        }
        out
    }

    // -- serving -------------------------------------------------------------------------------

    async fn latency(&self) {
        if self.params.max_latency_ms == 0 {
            return;
        }
        let ms = self.lock().fault.range(0, self.params.max_latency_ms);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Counts the call and decides whether it fails: an injected error, or a forced one when
    /// virtual time has not moved for too many calls (a hot loop in the caller).
    fn enter(&self, s: &mut State, what: &str, expired_allowed: bool) -> Result<(), SourceError> {
        s.stats.source_calls += 1;
        let now = Instant::now();
        if s.hot_at == Some(now) {
            s.hot_calls += 1;
            if s.hot_calls > HOT_LOOP_CALLS {
                if !s.hot_reported {
                    s.hot_reported = true;
                    s.violations.push(format!(
                        "hot loop: more than {HOT_LOOP_CALLS} source calls without virtual time \
                         moving (last call: {what})"
                    ));
                }
                return Err(SourceError::Transient("model: hot loop".into()));
            }
        } else {
            s.hot_at = Some(now);
            s.hot_calls = 0;
        }
        if s.fault.chance(self.params.error_per_mille) {
            s.stats.injected_errors += 1;
            let kinds = if expired_allowed { 3 } else { 2 };
            return Err(match s.fault.below(kinds) {
                0 => SourceError::Throttled(format!("model: {what}: LimitExceededException")),
                1 => SourceError::Transient(format!("model: {what}: HTTP 500")),
                _ => SourceError::ExpiredIterator,
            });
        }
        Ok(())
    }

    fn shard_by_id(&self, s: &mut State, shard_id: &str, what: &str) -> Result<usize, SourceError> {
        match s.by_id.get(shard_id) {
            Some(&i) if !s.shards[i].gone => Ok(i),
            Some(_) => {
                s.stats.not_found_served += 1;
                Err(SourceError::StreamNotFound(format!(
                    "ResourceNotFoundException: {what}: shard {shard_id} does not exist \
                     (trimmed past retention)"
                )))
            }
            None => {
                s.violations
                    .push(format!("{what} of shard {shard_id}, which never existed"));
                Err(SourceError::StreamNotFound(format!(
                    "ResourceNotFoundException: {what}: shard {shard_id} does not exist"
                )))
            }
        }
    }

    fn new_iterator(s: &mut State, shard: usize, pos: usize) -> ShardIterator {
        s.iterator_serial += 1;
        ShardIterator {
            shard_id: s.shards[shard].id.clone(),
            token: token(s.iterator_serial, shard, pos),
        }
    }

    fn change_record(&self, shard: &ShardState, r: &Rec) -> SourceRecord {
        let keys = BTreeMap::from([(KEY_ATTR.to_string(), AttributeValue::S(key_name(r.key)))]);
        let mut image = keys.clone();
        image.insert(
            VERSION_ATTR.to_string(),
            AttributeValue::N(r.version.to_string()),
        );
        SourceRecord::DynamoDb(ChangeRecord {
            event_id: format!("{:032x}", r.seq),
            operation: if r.version == 1 {
                OperationType::Insert
            } else {
                OperationType::Modify
            },
            event_version: "1.1".into(),
            aws_region: "us-east-1".into(),
            table_name: "lineage".into(),
            source: SourceIdentity {
                stream_arn: MODEL_STREAM.into(),
                shard_id: shard.id.clone(),
                sequence_number: seq_number(r.seq),
            },
            approximate_creation_millis: Some(1_700_000_000_000 + r.millis as i64),
            keys,
            new_image: Some(image),
            old_image: None,
            size_bytes: 24,
            view_type: StreamViewType::NewImage,
            user_identity: None,
        })
    }
}

#[async_trait]
impl ShardSource for StreamModel {
    fn stream_arn(&self) -> &str {
        MODEL_STREAM
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        self.latency().await;
        let mut s = self.lock();
        self.enter(&mut s, "list_shards", false)?;
        let hide = self.params.sabotage == Sabotage::HideParents;
        let mut out: Vec<Shard> = s
            .shards
            .iter()
            .filter(|sh| !sh.gone)
            .map(|sh| Shard {
                shard_id: sh.id.clone(),
                parent_shard_id: sh.parent.filter(|_| !hide).map(|p| s.shards[p].id.clone()),
                adjacent_parent_shard_id: sh
                    .adjacent
                    .filter(|_| !hide)
                    .map(|p| s.shards[p].id.clone()),
                starting_sequence_number: Some(seq_number(sh.starting_seq)),
                ending_sequence_number: sh.ending_seq.map(seq_number),
            })
            .collect();
        // The services list shards in id order.
        out.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(out)
    }

    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        self.latency().await;
        let mut s = self.lock();
        self.enter(&mut s, "open_iterator", false)?;
        let i = self.shard_by_id(&mut s, shard_id, "GetShardIterator")?;
        let sh = &s.shards[i];
        let pos = match position {
            IteratorPosition::TrimHorizon | IteratorPosition::AtTimestamp(_) => sh.trimmed,
            IteratorPosition::Latest => sh.recs.len(),
            IteratorPosition::AfterSequenceNumber(seq) => {
                let value = seq_value(seq);
                let known =
                    value.is_some_and(|v| sh.recs.binary_search_by_key(&v, |r| r.seq).is_ok());
                if !known {
                    let msg =
                        format!("AFTER_SEQUENCE_NUMBER {seq} is not a record of shard {shard_id}");
                    s.violations.push(msg.clone());
                    return Err(SourceError::Fatal(format!("ValidationException: {msg}")));
                }
                let v = value.unwrap();
                let pos = sh.recs.partition_point(|r| r.seq <= v);
                if pos < sh.trimmed {
                    s.stats.trimmed_data_served += 1;
                    return Err(SourceError::TrimmedData(format!(
                        "TrimmedDataAccessException: after {seq} in {shard_id}"
                    )));
                }
                pos
            }
        };
        Ok(Self::new_iterator(&mut s, i, pos))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        self.latency().await;
        let mut guard = self.lock();
        let s = &mut *guard;
        self.enter(s, "get_records", true)?;
        let Some((i, pos)) = parse_token(&iterator.token) else {
            s.violations
                .push(format!("get_records with a forged iterator {iterator:?}"));
            return Err(SourceError::Fatal(
                "ValidationException: bad iterator".into(),
            ));
        };
        if s.shards.get(i).map(|sh| sh.id.as_str()) != Some(iterator.shard_id.as_str()) {
            s.violations
                .push(format!("iterator {iterator:?} relabelled to another shard"));
            return Err(SourceError::Fatal(
                "ValidationException: bad iterator".into(),
            ));
        }
        if s.shards[i].gone {
            // Its records are gone; a fresh iterator would not be granted either.
            s.stats.expired_served += 1;
            return Err(SourceError::ExpiredIterator);
        }
        if pos < s.shards[i].trimmed {
            s.stats.trimmed_data_served += 1;
            return Err(SourceError::TrimmedData(format!(
                "TrimmedDataAccessException: {}",
                s.shards[i].id
            )));
        }
        let len = s.shards[i].recs.len();
        let closed = s.shards[i].ending_seq.is_some();
        let n = if s.fault.chance(self.params.empty_page_per_mille) {
            0
        } else {
            let page = s.fault.range(1, u64::from(limit.max(1))) as usize;
            page.min(len - pos)
        };
        let end = pos + n;
        let mut next = if closed && end == len {
            // The last page ends the shard, or (as the services sometimes do) one more empty
            // page does.
            if n == 0 || s.fault.chance(500) {
                None
            } else {
                Some(end)
            }
        } else {
            Some(end)
        };
        let mut records = Vec::with_capacity(n);
        for r in &mut s.shards[i].recs[pos..end] {
            r.read = true;
        }
        let sh = &s.shards[i];
        for r in &sh.recs[pos..end] {
            records.push(self.change_record(sh, r));
        }
        match self.params.sabotage {
            Sabotage::DropRecord => {
                // Item k0's first version never leaves the model.
                let target = sh
                    .recs
                    .iter()
                    .find(|r| r.key == 0 && r.version == 1)
                    .map(|r| r.seq);
                if let Some(target) = target {
                    s.dropped = Some(target);
                    records.retain(|r| seq_value(r.sequence_number()) != Some(target));
                }
            }
            Sabotage::RepeatPage if !s.repeated && n >= 2 => {
                s.repeated = true;
                let again = records.clone();
                records.extend(again);
            }
            _ => {}
        }
        if next.is_none() && s.shards[i].end_served_at.is_none() {
            s.shards[i].end_served_at = Some(Instant::now());
        }
        let next_iterator = next.take().map(|p| Self::new_iterator(s, i, p));
        Ok(RecordPage {
            records,
            next_iterator,
            millis_behind_latest: None,
        })
    }
}
