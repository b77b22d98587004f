//! The rewarded count of each sequence and of the store, kept in the same transactions as the
//! rows that change it, so `rewarded` filters and the statistics need no pass over the store.
//! Counted under default weights (see `rltrace_core::sequence::counts_are_exact_under`): from the
//! sequence's counts when they tell it, otherwise by evaluating the sequence in the core.

use rltrace_core::Policy;
use rltrace_core::sequence::{SequenceCounts, evaluate, rewarded_from_counts};
use crate::db::{Sql, SqlExt, params};

use crate::StoreError;
use crate::rows::{COUNT_COLS, SEQ_COLS, events_for, rows_of, seq_counts, seq_info};

/// Recount the rewarded triplets of sequence `seq`; returns the change of the store's total.
pub(crate) fn recount(conn: &dyn Sql, seq: i64) -> Result<i64, StoreError> {
    let (counts, stored) = conn.prepare_cached(format!("SELECT {COUNT_COLS} FROM sequences WHERE id = ?1"))?.query_row(params![seq], |r| seq_counts(r, 0))?;
    recount_with(conn, seq, counts, stored)
}

/// [`recount`] with the sequence's counts and stored rewarded count already read.
pub(crate) fn recount_with(conn: &dyn Sql, seq: i64, counts: SequenceCounts, stored: i64) -> Result<i64, StoreError> {
    let now = count_now(conn, seq, &counts)?;
    if now != stored {
        conn.prepare_cached("UPDATE sequences SET rewarded_count = ?1 WHERE id = ?2")?.execute(params![now, seq])?;
    }
    Ok(now - stored)
}

/// The stored counts and rewarded count of sequence `seq`.
pub(crate) fn stored_counts(conn: &dyn Sql, seq: i64) -> Result<(SequenceCounts, i64), StoreError> {
    conn.prepare_cached(format!("SELECT {COUNT_COLS} FROM sequences WHERE id = ?1"))?.query_row(params![seq], |r| seq_counts(r, 0))
}

/// Store the rewarded counts that changed: `(sequence row, count)` (PostgreSQL: one statement).
pub(crate) fn set_counts(conn: &dyn Sql, updates: &[(i64, i64)]) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    if conn.dialect() == crate::db::Dialect::Postgres {
        conn.exec(
            "UPDATE sequences q SET rewarded_count = a.n FROM unnest($1, $2) AS a(id, n) WHERE q.id = a.id",
            &[
                crate::db::P::IA(updates.iter().map(|u| Some(u.0)).collect()),
                crate::db::P::IA(updates.iter().map(|u| Some(u.1)).collect()),
            ],
        )?;
        return Ok(());
    }
    for (seq, n) in updates {
        conn.prepare_cached("UPDATE sequences SET rewarded_count = ?1 WHERE id = ?2")?.execute(params![n, seq])?;
    }
    Ok(())
}

/// The rewarded count of sequence `seq` with the given counts: from the counts when they tell
/// it, otherwise by evaluating the sequence in the core.
pub(crate) fn count_now(conn: &dyn Sql, seq: i64, counts: &SequenceCounts) -> Result<i64, StoreError> {
    Ok(match rewarded_from_counts(counts) {
        Some(n) => n,
        None => {
            let info = conn.prepare_cached(format!("SELECT {SEQ_COLS} FROM sequences WHERE id = ?1"))?.query_row(params![seq], seq_info)?;
            let rows = rows_of(conn, seq, false, i64::MAX)?;
            let events = events_for(conn, &info, &rows, i64::MAX)?;
            evaluate(&info.sequence_id, rows, &events, &Policy::default(), 0).rewarded_count() as i64
        }
    })
}

/// Recount every sequence and the store's total (migrations).
pub(crate) fn recount_all(conn: &dyn Sql) -> Result<(), StoreError> {
    let ids: Vec<i64> = conn.prepare_cached("SELECT id FROM sequences")?.query_map(params![], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for id in ids {
        recount(conn, id)?;
    }
    conn.execute("UPDATE counters SET rewarded_triplets = (SELECT CAST(coalesce(sum(rewarded_count), 0) AS BIGINT) FROM sequences) WHERE id = 1", params![])?;
    Ok(())
}
