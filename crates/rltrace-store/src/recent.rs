//! The most recent sequences as rows, for the reward summaries the core computes over a bounded
//! sample (the what-if and the web UI's overview, `rltrace_core::whatif`): newest first, walking
//! the sequence (or role) index backwards, with a bound on sequences, triplets and rows looked
//! at, so the work never grows with the store.

use rltrace_core::whatif::SampledSequence;

use crate::StoreError;
use crate::db::{SqlExt, params};
use crate::read::{ReadTx, SCAN_BUDGET, SequenceFilter};
use crate::rows::{SEQ_COLS, SeqInfo, add_task_events, keyed_events_of_many, rows_of_many, seq_info};

/// What [`ReadTx::recent_sequences`] read.
#[derive(Debug, Clone, Default)]
pub struct RecentSample {
    /// The sequences, newest first: their rows (without state and action texts) and the ledger
    /// events that may reach them.
    pub sequences: Vec<SampledSequence>,
    /// Sequences passed over because they alone would exceed the triplet bound.
    pub skipped_long: usize,
    /// Whether the walk stopped at a bound (sequences, triplets or rows looked at) before the
    /// oldest sequence.
    pub bounded: bool,
}

/// Sequences whose rows are read with one query at once.
const PER_QUERY: usize = 256;

impl ReadTx<'_> {
    /// The time this read stands at ("now" for completeness and the fallback), microseconds.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The newest sequences that have a triplet with role `f.role` (when given) and overlap
    /// `[f.since, f.until]`, or the one named `sequence_id`: at most `limit` sequences and
    /// `max_triplets` triplets in all (a longer sequence is passed over and counted), looking at
    /// no more than the scan budget of sequence rows. `f`'s other filters are the caller's to
    /// apply on the evaluated triplets.
    pub fn recent_sequences(&self, f: &SequenceFilter, sequence_id: Option<&str>, limit: usize, max_triplets: usize) -> Result<RecentSample, StoreError> {
        let mut out = RecentSample::default();
        let mut infos: Vec<SeqInfo> = Vec::new();
        let mut triplets = 0usize;
        if let Some(name) = sequence_id {
            if let Some(info) = self.info_by_name(name)? {
                if usize::try_from(info.triplet_count).unwrap_or(usize::MAX) > max_triplets {
                    out.skipped_long += 1;
                } else {
                    infos.push(info);
                }
            }
        } else {
            let cols = SEQ_COLS.split(", ").map(|c| format!("q.{c}")).collect::<Vec<_>>().join(", ");
            let sql = match f.role {
                Some(_) => format!("SELECT {cols}, q.first_us FROM sequence_roles r JOIN sequences q ON q.id = r.seq_ref WHERE r.role = ?1 AND q.triplet_count > 0 ORDER BY r.seq_ref DESC LIMIT {SCAN_BUDGET}"),
                None => format!("SELECT {cols}, q.first_us FROM sequences q WHERE q.triplet_count > 0 AND ?1 IS NULL ORDER BY q.id DESC LIMIT {SCAN_BUDGET}"),
            };
            // At most SCAN_BUDGET rows are looked at: the statement says so, since its rows are read
            // whole before they are walked.
            let mut stmt = self.tx.prepare_cached(sql.as_str())?;
            let mut rows = stmt.query(params![f.role.as_deref()])?;
            let mut scanned = 0usize;
            while let Some(r) = rows.next()? {
                scanned += 1;
                let info = seq_info(r)?;
                let first_us: Option<i64> = r.get(SEQ_COLS.split(", ").count())?;
                let first_ok = f.until.is_none_or(|u| first_us.is_some_and(|first| first <= u));
                let last_ok = f.since.is_none_or(|s| info.last_us.is_some_and(|l| l >= s));
                if first_ok && last_ok {
                    let n = usize::try_from(info.triplet_count).unwrap_or(usize::MAX);
                    if n > max_triplets {
                        out.skipped_long += 1;
                    } else if triplets + n > max_triplets {
                        out.bounded = true;
                        break;
                    } else {
                        triplets += n;
                        infos.push(info);
                        if infos.len() >= limit {
                            out.bounded = rows.next()?.is_some();
                            break;
                        }
                    }
                }
                if scanned >= SCAN_BUDGET {
                    out.bounded = true;
                    break;
                }
            }
        }
        for part in infos.chunks(PER_QUERY) {
            let ids: Vec<i64> = part.iter().map(|i| i.id).collect();
            let mut rows = rows_of_many(self.tx, &ids, false, i64::MAX)?;
            let names: Vec<&str> = part.iter().filter(|i| i.reward_events > 0).map(|i| i.sequence_id.as_str()).collect();
            let mut keyed = if names.is_empty() { Default::default() } else { keyed_events_of_many(self.tx, &names, i64::MAX)? };
            for info in part {
                let seq_rows = rows.remove(&info.id).unwrap_or_default();
                if seq_rows.is_empty() {
                    continue;
                }
                let mut events = keyed.remove(&info.sequence_id).unwrap_or_default();
                add_task_events(self.tx, info, &seq_rows, i64::MAX, &mut events)?;
                out.sequences.push(SampledSequence { sequence_id: info.sequence_id.clone(), rows: seq_rows, events });
            }
        }
        Ok(out)
    }
}
