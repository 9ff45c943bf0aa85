//! The offset watermark of one partition: which offset may be committed.
//!
//! Every record offset the partition task reads is *observed*. Work that must finish before the
//! record counts as done takes *references* on the offset: one per trace the record contributed
//! spans to (released when the trace is dropped, or once per sink when kept: each sink releases
//! after it acknowledged), one for a dead-letter write, and so on. An offset is *resolved* when
//! its references are all released.
//!
//! The commit point is the lowest unresolved offset, or one past the highest observed offset when
//! everything is resolved. It never passes an unresolved offset, and never moves backwards.

use std::collections::BTreeMap;

/// Outstanding work per offset of one partition.
#[derive(Debug, Default, Clone)]
pub struct Watermark {
    refs: BTreeMap<i64, u32>,
    next: Option<i64>,
    committed: Option<i64>,
}

/// A misuse of the watermark (a bug in the caller, reported rather than panicking).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    /// An offset was observed that is not above the last one.
    #[error("offset {offset} observed after {last}")]
    OutOfOrder {
        /// The offset.
        offset: i64,
        /// The last observed offset.
        last: i64,
    },
    /// A reference was taken or released on an offset not observed (or already resolved).
    #[error("offset {0} has no outstanding reference")]
    Unknown(i64),
}

impl Watermark {
    /// An empty watermark.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was read. Offsets must increase (gaps are fine).
    pub fn observe(&mut self, offset: i64) -> Result<(), WatermarkError> {
        if let Some(n) = self.next {
            if offset < n {
                return Err(WatermarkError::OutOfOrder {
                    offset,
                    last: n - 1,
                });
            }
        }
        self.next = Some(offset + 1);
        Ok(())
    }

    /// Takes `n` references on an observed offset.
    pub fn acquire(&mut self, offset: i64, n: u32) -> Result<(), WatermarkError> {
        if n == 0 {
            return Ok(());
        }
        if self.next.is_none_or(|next| offset >= next) || self.committed.is_some_and(|c| offset < c)
        {
            return Err(WatermarkError::Unknown(offset));
        }
        *self.refs.entry(offset).or_insert(0) += n;
        Ok(())
    }

    /// Releases `n` references; the offset is resolved when none remain.
    pub fn release(&mut self, offset: i64, n: u32) -> Result<(), WatermarkError> {
        if n == 0 {
            return Ok(());
        }
        let Some(r) = self.refs.get_mut(&offset) else {
            return Err(WatermarkError::Unknown(offset));
        };
        if *r < n {
            return Err(WatermarkError::Unknown(offset));
        }
        *r -= n;
        if *r == 0 {
            self.refs.remove(&offset);
        }
        Ok(())
    }

    /// The offset to commit now (the next record to read after a restart), if any was observed.
    pub fn commit_point(&self) -> Option<i64> {
        match self.refs.first_key_value() {
            Some((&lowest, _)) => Some(lowest),
            None => self.next,
        }
    }

    /// The commit point if it moved past the last one taken with this method.
    pub fn take_new_commit(&mut self) -> Option<i64> {
        let p = self.commit_point()?;
        if self.committed.is_some_and(|c| p <= c) {
            return None;
        }
        self.committed = Some(p);
        Some(p)
    }

    /// Offsets with outstanding references.
    pub fn unresolved(&self) -> usize {
        self.refs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_point_is_lowest_unresolved() {
        let mut w = Watermark::new();
        assert_eq!(w.commit_point(), None);
        for o in 10..15 {
            w.observe(o).unwrap();
        }
        assert_eq!(w.commit_point(), Some(15));
        w.acquire(11, 2).unwrap();
        w.acquire(13, 1).unwrap();
        assert_eq!(w.commit_point(), Some(11));
        w.release(11, 1).unwrap();
        assert_eq!(w.commit_point(), Some(11));
        w.release(11, 1).unwrap();
        assert_eq!(w.commit_point(), Some(13));
        w.release(13, 1).unwrap();
        assert_eq!(w.commit_point(), Some(15));
    }

    #[test]
    fn gaps_and_errors() {
        let mut w = Watermark::new();
        w.observe(5).unwrap();
        w.observe(9).unwrap();
        assert_eq!(w.commit_point(), Some(10));
        assert_eq!(
            w.observe(9),
            Err(WatermarkError::OutOfOrder { offset: 9, last: 9 })
        );
        assert_eq!(w.acquire(10, 1), Err(WatermarkError::Unknown(10)));
        assert_eq!(w.release(5, 1), Err(WatermarkError::Unknown(5)));
        w.acquire(9, 1).unwrap();
        assert_eq!(w.release(9, 2), Err(WatermarkError::Unknown(9)));
        assert_eq!(w.commit_point(), Some(9));
    }

    #[test]
    fn take_new_commit_only_moves_forward() {
        let mut w = Watermark::new();
        w.observe(0).unwrap();
        w.acquire(0, 1).unwrap();
        assert_eq!(w.take_new_commit(), Some(0));
        assert_eq!(w.take_new_commit(), None);
        w.observe(1).unwrap();
        w.release(0, 1).unwrap();
        assert_eq!(w.take_new_commit(), Some(2));
        // Offsets below a commit cannot take new references.
        assert_eq!(w.acquire(0, 1), Err(WatermarkError::Unknown(0)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Observe { refs: u32, gap: u8 },
        Release { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..4, 0u8..3).prop_map(|(refs, gap)| Op::Observe { refs, gap }),
            any::<usize>().prop_map(|pick| Op::Release { pick }),
        ]
    }

    proptest! {
        /// The watermark never commits past an unresolved offset, never goes backwards, and
        /// reaches the end once everything is released.
        #[test]
        fn never_commits_past_unresolved(ops in proptest::collection::vec(op(), 1..200)) {
            let mut w = Watermark::new();
            let mut model: BTreeMap<i64, u32> = BTreeMap::new();
            let mut next = 0i64;
            let mut last_commit = i64::MIN;
            for op in ops {
                match op {
                    Op::Observe { refs, gap } => {
                        let o = next + i64::from(gap);
                        w.observe(o).unwrap();
                        w.acquire(o, refs).unwrap();
                        if refs > 0 { model.insert(o, refs); }
                        next = o + 1;
                    }
                    Op::Release { pick } => {
                        if model.is_empty() { continue; }
                        let keys: Vec<i64> = model.keys().copied().collect();
                        let o = keys[pick % keys.len()];
                        w.release(o, 1).unwrap();
                        let r = model.get_mut(&o).unwrap();
                        *r -= 1;
                        if *r == 0 { model.remove(&o); }
                    }
                }
                if let Some(c) = w.take_new_commit() {
                    prop_assert!(c > last_commit);
                    last_commit = c;
                }
                let p = w.commit_point().unwrap_or(0);
                if let Some((&lowest, _)) = model.first_key_value() {
                    prop_assert!(p <= lowest, "commit {p} passes unresolved {lowest}");
                    prop_assert_eq!(p, lowest);
                } else {
                    prop_assert_eq!(p, next);
                }
            }
            for (o, r) in model.clone() { w.release(o, r).unwrap(); }
            let observed = next > 0;
            prop_assert_eq!(w.commit_point(), observed.then_some(next));
        }
    }
}
