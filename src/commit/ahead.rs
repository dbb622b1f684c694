//! Lanes that run ahead of each other across batches, for flush-then-checkpoint sinks (the
//! `http` sink, Lambda's ParallelizationFactor): each lane is a task that works through its
//! share of every batch in order, so one item's changes still leave in order, while a lane
//! that retries or waits on a slow call holds back only its own keys. The checkpoint follows
//! the batches every lane is done with (`lanes::InFlight`), written in the background.
//!
//! How far the other lanes may run ahead of one that is stuck is bounded per shard: at most
//! `MAX_BATCHES` batches or `MAX_BYTES` of payload not yet passed by the checkpoint (the
//! oldest batch is always let in). At the bound the shard worker waits: reading stops, nothing
//! is dropped. Only protocols with nothing to recover run ahead: a crash sends again everything
//! after the checkpoint, which this never passes before every lane delivered it.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lanes::{self, InFlight};
use super::{joined, CommitError, Shared, Step};
use crate::lease::model::Checkpoint;
use crate::sink::{Batch, OutputRecord};
use crate::source::sequence::SequenceNumber;

/// Batches per shard not yet passed by the checkpoint, at most.
pub const MAX_BATCHES: usize = 16;
/// Payload bytes per shard not yet passed by the checkpoint, at most (counted in KiB).
pub const MAX_BYTES: usize = 32 << 20;

const MAX_KIB: u32 = (MAX_BYTES >> 10) as u32;

/// A shard's lanes at work, and the task that moves its checkpoint after them.
pub(super) struct LanesAhead {
    shared: Arc<Shared>,
    /// Each lane's queue of work, by lane number.
    lanes: Vec<mpsc::UnboundedSender<LaneWork>>,
    lane_tasks: Vec<JoinHandle<()>>,
    /// To the coordinator: the batches, in order (a batch is announced before its work).
    events: Option<mpsc::UnboundedSender<Event>>,
    coordinator: Option<JoinHandle<Result<Step, CommitError>>>,
    /// Cancelled when the coordinator ends: the lanes stop taking work.
    ended: CancellationToken,
    batches: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    next_number: u64,
}

/// A lane's calls of one batch.
struct LaneWork {
    number: u64,
    calls: Vec<Vec<OutputRecord>>,
}

enum Event {
    Batch {
        number: u64,
        /// Lanes given calls (0: every record of it was passed over).
        lanes: usize,
        kept: Kept,
    },
    LaneDone {
        number: u64,
        step: Result<Step, CommitError>,
    },
}

/// What a batch in flight holds: where the checkpoint goes once it is done, and its room under
/// the bounds (given back when the checkpoint may pass it).
struct Kept {
    last_read: SequenceNumber,
    record_millis: Option<i64>,
    _batch: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

impl LanesAhead {
    pub(super) fn start(shared: &Arc<Shared>) -> LanesAhead {
        let (events, events_rx) = mpsc::unbounded_channel();
        let ended = CancellationToken::new();
        let mut lanes = Vec::new();
        let mut lane_tasks = Vec::new();
        for lane in 0..shared.parts.lanes.max(1) {
            let (work, work_rx) = mpsc::unbounded_channel();
            lanes.push(work);
            lane_tasks.push(tokio::spawn(run_lane(
                shared.clone(),
                lane,
                work_rx,
                events.clone(),
                ended.clone(),
            )));
        }
        let coordinator = tokio::spawn(coordinate(shared.clone(), events_rx, ended.clone()));
        LanesAhead {
            shared: shared.clone(),
            lanes,
            lane_tasks,
            events: Some(events),
            coordinator: Some(coordinator),
            ended,
            batches: Arc::new(Semaphore::new(MAX_BATCHES)),
            kib: Arc::new(Semaphore::new(MAX_KIB as usize)),
            next_number: 0,
        }
    }

    /// Hands a batch to its lanes; waits only while the shard is at its bound. Returns how
    /// the lanes ended if they have (a failure, the lease lost, a stop).
    pub(super) async fn submit(
        &mut self,
        records: Vec<OutputRecord>,
        last_read: SequenceNumber,
        record_millis: Option<i64>,
    ) -> Result<Step, CommitError> {
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        let kib = u32::try_from(bytes >> 10)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_KIB);
        let (batches, kibs) = (self.batches.clone(), self.kib.clone());
        let room = async move {
            let batch = batches.acquire_owned().await;
            let kib = kibs.acquire_many_owned(kib).await;
            (batch, kib)
        };
        let (ended, stop) = (self.ended.clone(), self.shared.parts.stop.clone());
        let room = tokio::select! {
            biased;
            _ = ended.cancelled() => None,
            _ = stop.cancelled() => return Ok(Step::Stopped),
            room = room => Some(room),
        };
        let Some((batch, kib)) = room else {
            return self.outcome().await;
        };
        let (Ok(batch), Ok(kib), Some(events)) = (batch, kib, &self.events) else {
            // The semaphores are never closed, and events is only taken by drain.
            return Ok(Step::Stopped);
        };
        let number = self.next_number;
        self.next_number += 1;
        let split = lanes::split(
            records,
            self.shared.parts.lanes,
            self.shared.parts.sink.batch_limits(),
        );
        let kept = Kept {
            last_read,
            record_millis,
            _batch: batch,
            _kib: kib,
        };
        // Announced before any lane can report on it (one channel, in order).
        let _ = events.send(Event::Batch {
            number,
            lanes: split.len(),
            kept,
        });
        for lane in split {
            if let Some(queue) = self.lanes.get(usize::from(lane.lane)) {
                let _ = queue.send(LaneWork {
                    number,
                    calls: lane.calls,
                });
            }
        }
        Ok(Step::Done)
    }

    /// How the coordinator ended (once; afterwards Done).
    async fn outcome(&mut self) -> Result<Step, CommitError> {
        match self.coordinator.take() {
            Some(task) => joined(task).await,
            None => Ok(Step::Done),
        }
    }

    /// Lets the lanes finish the work they have (a stop cuts it short) and the checkpoint
    /// follow them; returns how that ended. When the coordinator has ended first (a failure,
    /// the lease lost), the lanes are not waited for: one may be retrying a sink that is down.
    pub(super) async fn drain(mut self) -> Result<Step, CommitError> {
        self.lanes.clear();
        self.events = None;
        let ended = self.ended.clone();
        let lanes_done = async {
            for task in &mut self.lane_tasks {
                let _ = task.await;
            }
        };
        tokio::select! {
            _ = lanes_done => {}
            _ = ended.cancelled() => {}
        }
        for task in &self.lane_tasks {
            task.abort();
        }
        self.outcome().await
    }
}

impl Drop for LanesAhead {
    /// Dropped without `drain` (the shard failed): nothing more is sent for it.
    fn drop(&mut self) {
        for task in &self.lane_tasks {
            task.abort();
        }
        if let Some(task) = &self.coordinator {
            task.abort();
        }
    }
}

/// A lane: its share of each batch in order. After a batch it could not finish (a stop, the
/// lease lost, a failure) it sends nothing more: a later batch of its keys must not pass it.
async fn run_lane(
    shared: Arc<Shared>,
    lane: u8,
    mut work: mpsc::UnboundedReceiver<LaneWork>,
    events: mpsc::UnboundedSender<Event>,
    ended: CancellationToken,
) {
    let template = Batch {
        stream_arn: shared.parts.stream_arn.clone(),
        shard_id: shared.shard().to_string(),
        records: Vec::new(),
        recovery: None,
        number: None,
    };
    let mut halted = false;
    while let Some(LaneWork { number, calls }) = work.recv().await {
        halted = halted || ended.is_cancelled() || shared.parts.stop.is_cancelled();
        let step = if halted {
            Ok(Step::Stopped)
        } else {
            shared.deliver_lane(lane, calls, &template).await
        };
        halted = halted || !matches!(step, Ok(Step::Done));
        let _ = events.send(Event::LaneDone { number, step });
    }
}

/// Follows the lanes: a batch every lane is done with, and every batch before it, may be
/// passed by the checkpoint. Ends at the first failure or lost lease, or when the lanes are
/// gone; a lane that stopped holds the checkpoint before its batch while the others finish.
async fn coordinate(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    ended: CancellationToken,
) -> Result<Step, CommitError> {
    let _ended = ended.drop_guard();
    let mut in_flight: InFlight<Kept> = InFlight::default();
    let mut outcome = Step::Done;
    while let Some(event) = events.recv().await {
        let done = match event {
            Event::Batch {
                number,
                lanes,
                kept,
            } => in_flight.register(number, lanes, kept),
            Event::LaneDone { number, step } => match step? {
                Step::Done => in_flight.lane_done(number),
                Step::LeaseLost => return Ok(Step::LeaseLost),
                Step::Stopped => {
                    outcome = Step::Stopped;
                    Vec::new()
                }
            },
        };
        if let Some(last) = done.last() {
            let to = Checkpoint::Sequence(last.last_read.clone());
            let step = Shared::checkpoint_in_background(&shared, to, last.record_millis).await?;
            if step != Step::Done {
                return Ok(step);
            }
        }
    }
    Ok(outcome)
}
