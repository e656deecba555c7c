//! How far a reader may read. The horizon of an application is the highest id below every id
//! still in flight (and, in concurrent mode, at most the highest id handed out). A reader must
//! return nothing its snapshot cannot prove settled: [`EntryRef::readable_bound`] takes the
//! horizon as of now and lowers it below any id committed by a transaction the reader's
//! snapshot still sees as running. The recent commits are kept exactly for the last
//! [`RECENT`], by transaction id; older ones are folded into summaries, judged by when they
//! committed ([`Commit::next`]). So a reader that has seen id N never later finds a new id
//! <= N, whatever its isolation level, and no unrelated transaction holds it back.

use super::entries::{EntryRef, CONCURRENT};
use super::Shared;
use pgrx::pg_sys;
use std::sync::atomic::Ordering::SeqCst;

/// Commits remembered exactly per application.
const RECENT: usize = 64;
/// Older commits are folded into summaries of this many.
const SUMMARY_SPAN: u32 = 64;
const SUMMARIES: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Commit {
    pub xid: u64,
    /// The lowest id the committing transaction held.
    pub lowest: i64,
    /// The next transaction id when the commit was already visible. A snapshot whose xmax is
    /// above it was taken after a transaction with a later id completed, so after this
    /// commit: it sees it.
    pub next: u64,
}

/// Commits folded together: a snapshot that may have been taken before one of them is held
/// below the lowest id of all of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Summary {
    max_xid: u64,
    max_next: u64,
    min_lowest: i64,
    count: u32,
}

impl Summary {
    fn add(&mut self, commit: &Commit) {
        self.merge(&Summary {
            max_xid: commit.xid,
            max_next: commit.next,
            min_lowest: commit.lowest,
            count: 1,
        });
    }

    fn merge(&mut self, other: &Summary) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
        } else {
            self.max_xid = self.max_xid.max(other.max_xid);
            self.max_next = self.max_next.max(other.max_next);
            self.min_lowest = self.min_lowest.min(other.min_lowest);
            self.count = self.count.saturating_add(other.count);
        }
    }
}

/// An application's recent commits: the last [`RECENT`] exactly, older ones in summaries of
/// [`SUMMARY_SPAN`], the oldest [`SUMMARIES`] kept apart and everything before in one.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Commits {
    recent: [Commit; RECENT],
    recent_len: u32,
    recent_next: u32,
    folding: Summary,
    summaries: [Summary; SUMMARIES],
    summaries_len: u32,
    summaries_next: u32,
    ancient: Summary,
}

impl Commits {
    fn push(&mut self, commit: Commit) {
        let at = self.recent_next as usize;
        if (self.recent_len as usize) == RECENT {
            let evicted = self.recent[at];
            self.folding.add(&evicted);
            if self.folding.count == SUMMARY_SPAN {
                let at = self.summaries_next as usize;
                if (self.summaries_len as usize) == SUMMARIES {
                    let oldest = self.summaries[at];
                    self.ancient.merge(&oldest);
                } else {
                    self.summaries_len += 1;
                }
                self.summaries[at] = self.folding;
                self.summaries_next = ((at + 1) % SUMMARIES) as u32;
                self.folding = Summary::default();
            }
        } else {
            self.recent_len += 1;
        }
        self.recent[at] = commit;
        self.recent_next = ((at + 1) % RECENT) as u32;
    }

    /// The lowest id of a commit a reader may not see, as `sees_running` and
    /// `may_see_running` judge; None when it sees them all.
    fn lowest_unseen(
        &self,
        sees_running: impl Fn(u64) -> bool,
        may_see_running: impl Fn(&Summary) -> bool,
    ) -> Option<i64> {
        let recent = self.recent[..self.recent_len as usize]
            .iter()
            .filter(|commit| sees_running(commit.xid))
            .map(|commit| commit.lowest);
        let folded = self.summaries[..self.summaries_len as usize]
            .iter()
            .chain([&self.folding, &self.ancient])
            .filter(|summary| summary.count > 0 && may_see_running(summary))
            .map(|summary| summary.min_lowest);
        recent.chain(folded).min()
    }
}

/// `bound` lowered to `to` (an unbounded `bound` becomes `to`).
fn lower_to(bound: Option<i64>, to: i64) -> i64 {
    bound.map_or(to, |bound| bound.min(to))
}

/// A 32-bit transaction id as a 64-bit one, given the next 64-bit transaction id (no
/// transaction id in use is more than 2^31 older than it).
fn widen(next: u64, xid: u32) -> u64 {
    next - u64::from((next as u32).wrapping_sub(xid))
}

/// Whether a snapshot with bounds `xmin` and `xmax` may have been taken before one of the
/// summarized commits: not when every one of them had completed before its xmin, nor when a
/// transaction that began after all of them had completed before it was taken. An unrelated
/// long transaction holds back the first test but not the second.
fn may_see_running(xmin: u64, xmax: u64, summary: &Summary) -> bool {
    summary.max_xid >= xmin && xmax <= summary.max_next
}

/// A snapshot's bounds, as 64-bit transaction ids.
struct SnapshotView {
    snapshot: pg_sys::Snapshot,
    xmin: u64,
    xmax: u64,
}

impl SnapshotView {
    fn new(snapshot: pg_sys::Snapshot) -> Self {
        // SAFETY: the caller's active snapshot, valid during the call.
        unsafe {
            let next = pg_sys::ReadNextFullTransactionId().value;
            let data = &*snapshot;
            SnapshotView {
                snapshot,
                xmin: widen(next, data.xmin.into_inner()),
                xmax: widen(next, data.xmax.into_inner()),
            }
        }
    }

    /// Whether the snapshot sees the (committed) transaction `xid` as still running.
    fn sees_running(&self, xid: u64) -> bool {
        if xid < self.xmin {
            return false;
        }
        // SAFETY: a recent transaction id and a valid snapshot.
        unsafe { pg_sys::XidInMVCCSnapshot(pg_sys::TransactionId::from(xid as u32), self.snapshot) }
    }
}

impl Shared {
    /// Records a commit of concurrent ids of entry `index` among its recent commits.
    pub(super) fn record_commit(&self, index: usize, commit: Commit) {
        let entry = self.entry_mut(index);
        // SAFETY: the spinlock guards `commits`.
        unsafe {
            pg_sys::SpinLockAcquire(&raw mut (*entry).commits_lock);
            (*entry).commits.push(commit);
            pg_sys::SpinLockRelease(&raw mut (*entry).commits_lock);
        }
    }
}

impl EntryRef {
    /// The horizon now: the highest id below every id in flight and, in concurrent mode, at
    /// most the highest id handed out. None when nothing bounds reading (serialized, nothing
    /// in flight).
    pub fn horizon(&self) -> Option<i64> {
        let entry = self.entry();
        let mut horizon = (entry.mode.load(SeqCst) == CONCURRENT).then(|| entry.taken.load(SeqCst));
        for lowest in self.lowest_ids_held() {
            horizon = Some(lower_to(horizon, lowest - 1));
        }
        horizon
    }

    /// The highest id a reader with `snapshot` may return (None: no bound): the horizon,
    /// lowered below every id of a commit that `snapshot` does not see.
    pub fn readable_bound(&self, snapshot: pg_sys::Snapshot) -> Option<i64> {
        let bound = self.horizon();
        let commits = {
            let entry = self.shared.entry_mut(self.index);
            // SAFETY: the spinlock guards `commits`; the copy is a plain memcpy.
            unsafe {
                pg_sys::SpinLockAcquire(&raw mut (*entry).commits_lock);
                let copy = (*entry).commits;
                pg_sys::SpinLockRelease(&raw mut (*entry).commits_lock);
                copy
            }
        };
        let view = SnapshotView::new(snapshot);
        match commits.lowest_unseen(
            |xid| view.sees_running(xid),
            |summary| may_see_running(view.xmin, view.xmax, summary),
        ) {
            Some(lowest) => Some(lower_to(bound, lowest - 1)),
            None => bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Commits {
        // SAFETY: plain integers; all zero is the empty state, as in shared memory.
        unsafe { std::mem::zeroed() }
    }

    fn commit(xid: u64, lowest: i64) -> Commit {
        Commit {
            xid,
            lowest,
            next: xid + 1,
        }
    }

    #[test]
    fn the_recent_commits_are_kept_exactly_and_older_ones_folded() {
        let mut commits = empty();
        let total = RECENT + SUMMARY_SPAN as usize * (SUMMARIES + 3) + 5;
        for n in 0..total {
            commits.push(commit(1000 + n as u64, 10 * n as i64 + 1));
        }
        assert_eq!(commits.recent_len as usize, RECENT);
        assert_eq!(commits.summaries_len as usize, SUMMARIES);
        assert_eq!(commits.folding.count, 5);
        // Every commit is counted once: recent, folding, summaries and the ancient one.
        let folded: u32 = commits.summaries.iter().map(|s| s.count).sum::<u32>()
            + commits.folding.count
            + commits.ancient.count;
        assert_eq!(folded as usize + RECENT, total);
        // The oldest commits went into the ancient summary, with their lowest id.
        assert_eq!(commits.ancient.min_lowest, 1);
        assert_eq!(commits.ancient.count, 3 * SUMMARY_SPAN);
    }

    #[test]
    fn a_reader_is_held_below_the_lowest_id_of_a_commit_it_does_not_see() {
        let mut commits = empty();
        for (xid, lowest) in [(10, 5), (11, 3), (12, 8)] {
            commits.push(commit(xid, lowest));
        }
        let sees_none = |_: &Summary| false;
        assert_eq!(commits.lowest_unseen(|_| false, sees_none), None);
        assert_eq!(commits.lowest_unseen(|xid| xid == 12, sees_none), Some(8));
        assert_eq!(commits.lowest_unseen(|xid| xid >= 11, sees_none), Some(3));
        assert_eq!(lower_to(Some(20), 8 - 1), 7);
        assert_eq!(lower_to(None, 2), 2);
    }

    #[test]
    fn a_summary_holds_back_only_snapshots_that_may_predate_its_commits() {
        let mut summary = Summary::default();
        for (xid, next, lowest) in [(100, 105, 40), (103, 110, 30)] {
            summary.add(&Commit { xid, lowest, next });
        }
        assert_eq!(
            (summary.max_xid, summary.max_next, summary.min_lowest),
            (103, 110, 30)
        );
        // Every summarized commit completed before the snapshot's xmin: it sees them.
        assert!(!may_see_running(104, 120, &summary));
        // Taken after a transaction that began after all of them completed: it sees them.
        assert!(!may_see_running(90, 111, &summary));
        // Otherwise it may not (an unrelated old transaction keeps xmin low).
        assert!(may_see_running(90, 108, &summary));
        assert!(may_see_running(103, 110, &summary));
    }

    #[test]
    fn merging_an_empty_summary_changes_nothing() {
        let mut summary = Summary::default();
        summary.merge(&Summary::default());
        assert_eq!(summary, Summary::default());
        summary.add(&commit(7, 2));
        let before = summary;
        summary.merge(&Summary::default());
        assert_eq!(summary, before);
    }

    #[test]
    fn transaction_ids_widen_across_the_32_bit_wraparound() {
        assert_eq!(widen(1000, 990), 990);
        let next = (5u64 << 32) + 10;
        assert_eq!(widen(next, 10), next);
        // An id just before the epoch boundary belongs to the previous epoch.
        assert_eq!(widen(next, u32::MAX - 5), (5u64 << 32) - 6);
    }
}
