//! What the poll loop does with each partition, as a pure state machine: whether a fetched record
//! is handed to the partition's task or skipped, when the partition is paused, when it may
//! resume and from where, and whether the end of the log counts as reached. The poll loop
//! (`source.rs`) only carries these decisions out with the consumer (pause, resume, seek).
//!
//! The guarantee, property-tested below against a model consumer that delivers stale records
//! (fetched before a pause or seek) in any order: the offsets handed to a task are consecutive,
//! with no gap and no repeat, whatever interleaving of fetches, full queues and resumes.

/// A partition: an input topic and a partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The input topic.
    pub topic: std::sync::Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl PartitionKey {
    /// The key of `topic`/`partition`.
    pub fn new(topic: &std::sync::Arc<str>, partition: i32) -> Self {
        PartitionKey {
            topic: std::sync::Arc::clone(topic),
            partition,
        }
    }
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Delivery state of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Records go straight to the task.
    Flowing,
    /// The task's queue was full at `resume_at`; the partition is paused and its records are
    /// skipped (they were not handed over and will be fetched again).
    Paused {
        /// The first offset not handed over.
        resume_at: i64,
    },
    /// Seeked back to `resume_at` and resumed; records fetched before the seek may still
    /// arrive, so nothing is handed over until `resume_at` itself comes back.
    Resuming {
        /// The offset the seek went to.
        resume_at: i64,
    },
}

/// What to do with a fetched record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRecord {
    /// Hand it to the task (then tell the flow [`Flow::handed_over`] or [`Flow::queue_full`]).
    HandOver,
    /// Skip it: paused, before the seek point, or already handed over.
    Skip,
}

/// One partition's flow, for one assignment (`generation`) of it.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The assignment it belongs to: a partition revoked and assigned again starts afresh.
    pub generation: u64,
    /// One past the last offset handed to the task.
    next: Option<i64>,
    mode: Mode,
}

impl Flow {
    /// A partition just assigned: flowing, nothing handed over.
    pub fn new(generation: u64) -> Self {
        Flow {
            generation,
            next: None,
            mode: Mode::Flowing,
        }
    }

    /// The state now.
    #[cfg(test)]
    fn mode(&self) -> Mode {
        self.mode
    }

    /// A record at `offset` was fetched.
    pub fn on_record(&mut self, offset: i64) -> OnRecord {
        match self.mode {
            Mode::Paused { .. } => OnRecord::Skip,
            Mode::Resuming { resume_at } if offset != resume_at => OnRecord::Skip,
            Mode::Resuming { .. } => {
                self.mode = Mode::Flowing;
                OnRecord::HandOver
            }
            // Below the next offset: already handed over. Above it is fine: a log has gaps
            // (transaction markers, compaction).
            Mode::Flowing if self.next.is_some_and(|n| offset < n) => OnRecord::Skip,
            Mode::Flowing => OnRecord::HandOver,
        }
    }

    /// The record at `offset` was queued for the task.
    pub fn handed_over(&mut self, offset: i64) {
        self.next = Some(offset + 1);
    }

    /// The task's queue had no room for the record at `offset` (or a fault holds the
    /// partition there): the caller pauses the partition.
    pub fn queue_full(&mut self, offset: i64) {
        self.mode = Mode::Paused { resume_at: offset };
    }

    /// Whether the end of the log counts as reached for the task: only while flowing (records
    /// held back while paused or resuming are still to come).
    pub fn end_counts(&self) -> bool {
        self.mode == Mode::Flowing
    }

    /// Where to resume, when the partition is paused, its queue has room again and nothing
    /// holds it: the caller resumes and seeks there, then calls [`Flow::resumed`] (or, when
    /// that fails, leaves it paused).
    pub fn resume_at(&self, has_room: bool, held: bool) -> Option<i64> {
        match self.mode {
            Mode::Paused { resume_at } if has_room && !held => Some(resume_at),
            _ => None,
        }
    }

    /// Resumed and seeked to the pause point: wait for it to come back.
    pub fn resumed(&mut self) {
        if let Mode::Paused { resume_at } = self.mode {
            self.mode = Mode::Resuming { resume_at };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pause_skip_resume_and_hand_over_again_from_the_pause_point() {
        let mut f = Flow::new(0);
        for o in 0..3 {
            assert_eq!(f.on_record(o), OnRecord::HandOver);
            f.handed_over(o);
        }
        assert_eq!(f.on_record(3), OnRecord::HandOver);
        f.queue_full(3);
        assert!(!f.end_counts());
        assert_eq!(f.on_record(4), OnRecord::Skip, "paused");
        assert_eq!(f.resume_at(false, false), None, "no room yet");
        assert_eq!(f.resume_at(true, true), None, "held");
        assert_eq!(f.resume_at(true, false), Some(3));
        f.resumed();
        assert_eq!(f.on_record(5), OnRecord::Skip, "fetched before the seek");
        assert_eq!(f.on_record(3), OnRecord::HandOver);
        f.handed_over(3);
        assert_eq!(f.on_record(3), OnRecord::Skip, "already handed over");
        assert!(f.end_counts());
        assert_eq!(
            f.on_record(6),
            OnRecord::HandOver,
            "a gap in the log (a transaction marker)"
        );
    }

    /// One step of the model consumer.
    #[derive(Debug, Clone)]
    enum Op {
        /// The consumer returns its next record (when not paused).
        Fetch,
        /// A record fetched before the last pause or seek arrives late (index into them).
        Stale(usize),
        /// The task takes everything queued.
        TaskTakes,
        /// The queue's room: this many records.
        Room(u8),
        /// A poll-loop turn: resume what may resume.
        Turn,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Fetch),
            2 => any::<usize>().prop_map(Op::Stale),
            2 => Just(Op::TaskTakes),
            1 => (0u8..4).prop_map(Op::Room),
            2 => Just(Op::Turn),
        ]
    }

    proptest! {
        /// Whatever the interleaving, the task gets 0, 1, 2, … with no gap and no repeat, and
        /// a partition whose queue empties always flows again.
        #[test]
        fn the_task_gets_consecutive_offsets(ops in proptest::collection::vec(op(), 1..300)) {
            let mut f = Flow::new(0);
            // The consumer: its position, whether it is paused, records it fetched before the
            // last pause or seek (which may still arrive).
            let (mut position, mut paused, mut stale) = (0i64, false, Vec::<i64>::new());
            let (mut queued, mut room, mut handed) = (0usize, 2usize, Vec::<i64>::new());
            for op in ops {
                let fetched = match op {
                    Op::Fetch if !paused => {
                        position += 1;
                        Some(position - 1)
                    }
                    // librdkafka drops what it fetched before a seek once the seek point is
                    // back, so a stale record comes only while paused or resuming.
                    Op::Stale(i) if !stale.is_empty() && f.mode() != Mode::Flowing => {
                        Some(stale[i % stale.len()])
                    }
                    Op::TaskTakes => {
                        queued = 0;
                        None
                    }
                    Op::Room(n) => {
                        room = n.into();
                        None
                    }
                    Op::Turn => {
                        if let Some(at) = f.resume_at(queued < room.max(1), false) {
                            stale.extend(at..position);
                            position = at;
                            paused = false;
                            f.resumed();
                        }
                        None
                    }
                    _ => None,
                };
                let Some(offset) = fetched else { continue };
                if f.on_record(offset) == OnRecord::Skip {
                    continue;
                }
                if queued >= room.max(1) {
                    f.queue_full(offset);
                    paused = true;
                    // librdkafka had fetched ahead: those records may still arrive.
                    position = position.max(offset + 4);
                    stale.extend(offset + 1..position);
                    continue;
                }
                queued += 1;
                f.handed_over(offset);
                if f.mode() == Mode::Flowing {
                    stale.clear();
                }
                prop_assert_eq!(offset, handed.len() as i64, "handed {:?} then {}", handed, offset);
                handed.push(offset);
            }
            // Drained: the partition resumes and the next fetch continues the sequence.
            if let Some(at) = f.resume_at(true, false) {
                f.resumed();
                prop_assert_eq!(at, handed.len() as i64);
                prop_assert_eq!(f.on_record(at), OnRecord::HandOver);
            }
        }
    }
}
