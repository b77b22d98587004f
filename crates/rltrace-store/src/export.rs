//! The streamed export: every triplet that passes the filters, sequence by sequence, in sequence
//! order, with one sequence in memory at a time. It reads at most up to the watermarks taken when
//! it starts (the newest span row and ledger event), so it is one logical snapshot, yet each run
//! of [`SEQUENCES_PER_READ`] sequences is its own short read transaction: a long export never
//! pins the WAL (it checkpoints between them, so the writer can start the WAL over), and ingest
//! goes on meanwhile.

use rltrace_core::Policy;
use rltrace_core::export::TripletView;
use crate::db::{SqlExt, params};

use crate::read::{ReadTx, TripletFilter};
use crate::rows::{SEQ_COLS, add_task_events, keyed_events_of_many, rows_of_many, seq_info};
use rltrace_core::sequence::evaluate;
use crate::{Store, StoreError, Watermarks};

/// Sequences read in one read transaction.
pub const SEQUENCES_PER_READ: usize = 256;
/// Triplets read with one query at most (a longer sequence is read alone).
const TRIPLETS_PER_READ: i64 = 20_000;

/// Counts of an export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportCounts {
    /// Triplets written.
    pub triplets: u64,
    /// Sequences with at least one triplet written.
    pub sequences: u64,
    /// Triplets written with an effective reward.
    pub rewarded: u64,
    /// The watermarks the export read up to.
    pub watermarks: Watermarks,
}

/// What an export reads: up to which rows, and the time that stands in for "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    /// Rows read at most.
    pub watermarks: Watermarks,
    /// "Now" for completeness (idle time).
    pub now: i64,
}

impl Store {
    /// Stream every triplet that passes `f` to `sink` (which returns `false` to stop), up to
    /// `as_of` (default: the watermarks and the time when it starts). Blocking.
    pub fn export(
        &self,
        f: &TripletFilter,
        policy: &Policy,
        as_of: Option<AsOf>,
        sink: &mut dyn FnMut(&TripletView) -> Result<bool, StoreError>,
    ) -> Result<ExportCounts, StoreError> {
        let as_of = match as_of {
            Some(a) => a,
            None => AsOf { watermarks: self.read(|tx| tx.watermarks())?, now: crate::now_micros() },
        };
        let mut counts = ExportCounts { watermarks: as_of.watermarks, ..ExportCounts::default() };
        let mut after = 0i64;
        loop {
            let (last, more) = self.read(|tx| export_chunk(tx, f, policy, as_of, after, &mut counts, sink))?;
            // Between runs no snapshot is held: let the WAL be checkpointed so that the writer
            // can start it over instead of growing it while the export goes on.
            self.checkpoint();
            match (last, more) {
                (Some(l), true) => after = l,
                _ => return Ok(counts),
            }
        }
    }
}

/// One run of sequences after `after`; returns the last sequence row read and whether to go on.
fn export_chunk(
    tx: &ReadTx<'_>,
    f: &TripletFilter,
    policy: &Policy,
    as_of: AsOf,
    after: i64,
    counts: &mut ExportCounts,
    sink: &mut dyn FnMut(&TripletView) -> Result<bool, StoreError>,
) -> Result<(Option<i64>, bool), StoreError> {
    let cols = SEQ_COLS.split(", ").map(|c| format!("q.{c}")).collect::<Vec<_>>().join(", ");
    let mut sql = match (&f.sequence_id, &f.role) {
        (Some(_), _) => format!("SELECT {cols} FROM sequences q WHERE q.sequence_id = ?2 AND q.id > ?1 AND ?3 IS NULL"),
        (None, Some(_)) => format!("SELECT {cols} FROM sequence_roles r JOIN sequences q ON q.id = r.seq_ref WHERE r.role = ?3 AND r.seq_ref > ?1 AND ?2 IS NULL"),
        (None, None) => format!("SELECT {cols} FROM sequences q WHERE q.id > ?1 AND ?2 IS NULL AND ?3 IS NULL"),
    };
    // Sequence-level bounds that rows at or below the watermarks cannot escape.
    sql.push_str(" AND q.triplet_count > 0 AND q.first_us IS NOT NULL");
    if f.since.is_some() {
        sql.push_str(" AND q.last_us >= ?4");
    } else {
        sql.push_str(" AND ?4 IS NULL");
    }
    if f.until.is_some() {
        sql.push_str(" AND q.first_us <= ?5");
    } else {
        sql.push_str(" AND ?5 IS NULL");
    }
    sql.push_str(if f.role.is_some() && f.sequence_id.is_none() { " ORDER BY r.seq_ref LIMIT ?6" } else { " ORDER BY q.id LIMIT ?6" });
    let infos = tx
        .tx
        .prepare_cached(sql.as_str())?
        .query_map(
            params![after, f.sequence_id, if f.sequence_id.is_none() { f.role.as_deref() } else { None }, f.since, f.until, SEQUENCES_PER_READ as i64],
            seq_info,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let more = infos.len() == SEQUENCES_PER_READ;
    let mut last = None;
    // Rows and keyed events of the run are read with one query each, a part of the run at a time
    // (at most TRIPLETS_PER_READ triplets in memory, or one sequence when it is longer).
    let mut start = 0;
    while start < infos.len() {
        let mut end = start;
        let mut triplets = 0i64;
        while end < infos.len() && (end == start || triplets + infos[end].triplet_count <= TRIPLETS_PER_READ) {
            triplets += infos[end].triplet_count;
            end += 1;
        }
        let part = &infos[start..end];
        start = end;
        let ids: Vec<i64> = part.iter().map(|i| i.id).collect();
        let mut rows = rows_of_many(tx.tx, &ids, true, as_of.watermarks.span)?;
        let names: Vec<&str> = part.iter().filter(|i| i.reward_events > 0).map(|i| i.sequence_id.as_str()).collect();
        let mut keyed = if names.is_empty() { Default::default() } else { keyed_events_of_many(tx.tx, &names, as_of.watermarks.event)? };
        for info in part {
            last = Some(info.id);
            let seq_rows = rows.remove(&info.id).unwrap_or_default();
            if seq_rows.is_empty() {
                continue;
            }
            let mut events = keyed.remove(&info.sequence_id).unwrap_or_default();
            add_task_events(tx.tx, info, &seq_rows, as_of.watermarks.event, &mut events)?;
            let eval = evaluate(&info.sequence_id, seq_rows, &events, policy, as_of.now);
            let mut any = false;
            for v in &eval.triplets {
                if f.keeps(v, eval.complete) {
                    any = true;
                    counts.triplets += 1;
                    counts.rewarded += u64::from(v.effective.reward.is_some());
                    if !sink(v)? {
                        counts.sequences += 1;
                        return Ok((last, false));
                    }
                }
            }
            counts.sequences += u64::from(any);
        }
    }
    Ok((last, more))
}
