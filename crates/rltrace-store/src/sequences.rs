//! Reads of sequences and triplets: the sequence list with its filters, one sequence with a page
//! of its triplets, triplet pages, one triplet with its ledger, and the statistics. Lists walk
//! indexes in id order (the role index, the rewarded count kept per sequence) and evaluate only
//! the sequences they return.

use std::collections::HashMap;

use rltrace_core::Policy;
use rltrace_core::export::TripletView;
use rltrace_core::sequence::{counts_are_exact_under, events_reaching, order};
use crate::db::{SqlExt, params};

use crate::read::{Loaded, Page, ReadTx, SCAN_BUDGET, SequenceDetail, SequenceFilter, SequenceSummary, Stats, TripletDetail, TripletFilter};
use crate::rows::{SEQ_COLS, events_for, rows_of, seq_info};
use crate::{StoreError, Watermarks};

/// The sequences evaluated for one page of triplets, each with its rows' positions.
type PageCache = HashMap<i64, (Loaded, HashMap<i64, usize>)>;

impl ReadTx<'_> {
    /// Store-wide counts; `rewarded_triplets` under `policy`: the count the writer keeps, exact
    /// unless the policy gives a source or component a zero weight; then the sequences with a
    /// rewarded triplet are evaluated under it.
    pub fn stats(&self, policy: &Policy) -> Result<Stats, StoreError> {
        let c = self.counts()?;
        let rewarded = if counts_are_exact_under(policy) {
            c.rewarded_triplets
        } else {
            let mut stmt = self.tx.prepare_cached(format!("SELECT {SEQ_COLS} FROM sequences WHERE rewarded_count > 0"))?;
            let infos = stmt.query_map(params![], seq_info)?.collect::<Result<Vec<_>, _>>()?;
            let mut n = 0u64;
            for info in infos {
                n += self.load(info, policy, false, Watermarks::ALL, self.now)?.eval.rewarded_count() as u64;
            }
            n
        };
        Ok(Stats { spans: c.spans, triplets: c.triplets, sequences: c.sequences, rewarded_triplets: rewarded, reward_events: c.reward_events })
    }

    /// A page of sequences in creation order, after `cursor`.
    pub fn sequences(&self, f: &SequenceFilter, cursor: Option<i64>, limit: usize, policy: &Policy) -> Result<Page<SequenceSummary>, StoreError> {
        let exact = counts_are_exact_under(policy);
        let cols = SEQ_COLS.split(", ").map(|c| format!("q.{c}")).collect::<Vec<_>>().join(", ");
        let mut sql = match f.role {
            Some(_) => format!("SELECT {cols} FROM sequence_roles r JOIN sequences q ON q.id = r.seq_ref WHERE r.role = ?4 AND r.seq_ref > ?1"),
            None => format!("SELECT {cols} FROM sequences q WHERE q.id > ?1 AND ?4 IS NULL"),
        };
        sql.push_str(" AND q.triplet_count > 0");
        if f.since.is_some() {
            sql.push_str(" AND q.last_us >= ?2");
        }
        if f.until.is_some() {
            sql.push_str(" AND q.first_us <= ?3");
        }
        match f.rewarded {
            Some(true) => sql.push_str(" AND q.rewarded_count > 0"),
            Some(false) if exact => sql.push_str(" AND q.rewarded_count = 0"),
            _ => {}
        }
        if f.review_pending {
            sql.push_str(" AND q.hitl_events = 0");
        }
        sql.push_str(if f.role.is_some() { " ORDER BY r.seq_ref LIMIT ?5" } else { " ORDER BY q.id LIMIT ?5" });
        let mut stmt = self.tx.prepare_cached(sql.as_str())?;
        scan_pages(
            cursor,
            limit,
            |after, batch| {
                let infos = stmt.query_map(params![after, f.since, f.until, f.role, batch as i64], seq_info)?.collect::<Result<Vec<_>, _>>()?;
                Ok(infos.into_iter().map(|i| (i.id, i)).collect())
            },
            |info| {
                let complete = self.complete_from_info(&info, policy);
                if f.complete.is_some_and(|c| c != complete) || (f.review_pending && !complete) {
                    return Ok(None);
                }
                // A summary needs the rewards, not the state and action texts.
                let s = self.load(info, policy, false, Watermarks::ALL, self.now)?.summary();
                Ok(f.rewarded.is_none_or(|r| r == s.rewarded).then_some(s))
            },
        )
    }

    /// One sequence with a page of its triplets in order (after the row `cursor`, at most
    /// `limit`) and its ledger.
    pub fn sequence(&self, sequence_id: &str, cursor: Option<i64>, limit: usize, policy: &Policy) -> Result<Option<SequenceDetail>, StoreError> {
        let Some(info) = self.info_by_name(sequence_id)? else { return Ok(None) };
        let (summary, Loaded { events, .. }, triplets, next) = self.page_of(info, policy, cursor, limit, |_, _| true)?;
        Ok(Some(SequenceDetail { summary, triplets, ledger: events, next }))
    }

    /// A page of triplets. With a `sequence_id` filter they come in sequence order, otherwise in
    /// arrival order; either way the cursor is the row of the last triplet returned.
    pub fn triplets(&self, f: &TripletFilter, cursor: Option<i64>, limit: usize, policy: &Policy) -> Result<Page<TripletView>, StoreError> {
        if let Some(seq) = &f.sequence_id {
            let Some(info) = self.info_by_name(seq)? else { return Ok(Page { items: Vec::new(), next: None }) };
            // The next page starts after the cursor's triplet in the sequence's order as it is
            // now, so a triplet arriving meanwhile earlier in the order does not repeat one.
            let (items, next) = self.triplet_page(info, policy, cursor, limit, f)?;
            return Ok(Page { items, next });
        }
        let postgres = self.tx.dialect() == crate::db::Dialect::Postgres;
        // PostgreSQL keeps a role's triplets in posting rows (`role_spans`, in id order), SQLite
        // in an index on (role, id).
        let (mut sql, order) = match &f.role {
            Some(_) if postgres => (
                String::from(
                    "SELECT s.id, s.seq_ref FROM role_spans r CROSS JOIN LATERAL unnest(r.ids) AS u(id) JOIN spans s ON s.id = u.id
                     WHERE r.role = ?2 AND r.last_id > ?1 AND u.id > ?1 AND s.seq_ref IS NOT NULL",
                ),
                " ORDER BY r.last_id, u.id LIMIT ?5",
            ),
            Some(_) => (String::from("SELECT s.id, s.seq_ref FROM spans s WHERE s.seq_ref IS NOT NULL AND s.id > ?1 AND s.role = ?2"), " ORDER BY s.id LIMIT ?5"),
            None => (String::from("SELECT s.id, s.seq_ref FROM spans s WHERE s.seq_ref IS NOT NULL AND s.id > ?1 AND ?2 IS NULL"), " ORDER BY s.id LIMIT ?5"),
        };
        if f.since.is_some() {
            sql.push_str(" AND s.ts_us >= ?3");
        }
        if f.until.is_some() {
            sql.push_str(" AND s.ts_us <= ?4");
        }
        if f.rewarded == Some(true) {
            sql.push_str(" AND EXISTS (SELECT 1 FROM sequences q WHERE q.id = s.seq_ref AND q.rewarded_count > 0)");
        }
        sql.push_str(order);
        let mut stmt = self.tx.prepare_cached(sql.as_str())?;
        // Sequences evaluated for this page, with each row's position.
        let cache: std::cell::RefCell<PageCache> = std::cell::RefCell::new(HashMap::new());
        let keep = |cache: &mut PageCache, loaded: Loaded| {
            if cache.len() >= 256 {
                cache.clear();
            }
            let positions = loaded.eval.rows.iter().enumerate().map(|(i, r)| (*r, i)).collect();
            cache.insert(loaded.info.id, (loaded, positions));
        };
        let page = scan_pages(
            cursor,
            limit,
            |after, batch| {
                let rows = stmt
                    .query_map(params![after, f.role, f.since, f.until, batch as i64], |r| {
                        let rowid = r.get::<_, i64>(0)?;
                        Ok((rowid, (rowid, r.get::<_, i64>(1)?)))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                if postgres {
                    // The batch's sequences in a few statements instead of a few each.
                    let mut wanted: Vec<i64> = rows.iter().map(|(_, (_, seq))| *seq).filter(|s| !cache.borrow().contains_key(s)).collect();
                    wanted.sort_unstable();
                    wanted.dedup();
                    for loaded in self.load_many(&wanted, policy)? {
                        keep(&mut cache.borrow_mut(), loaded);
                    }
                }
                Ok(rows)
            },
            |(rowid, seq_ref)| {
                let mut cache = cache.borrow_mut();
                if !cache.contains_key(&seq_ref) {
                    if cache.len() >= 256 {
                        cache.clear();
                    }
                    let Some(info) = self.info_by_id(seq_ref)? else { return Ok(None) };
                    keep(&mut cache, self.load(info, policy, false, Watermarks::ALL, self.now)?);
                }
                let Some((loaded, positions)) = cache.get(&seq_ref) else { return Ok(None) };
                let Some(&pos) = positions.get(&rowid) else { return Ok(None) };
                let v = &loaded.eval.triplets[pos];
                Ok(f.keeps(v, loaded.eval.complete).then(|| (rowid, v.clone())))
            },
        )?;
        // Sequences are evaluated without their state and action texts; only the page's are read.
        Ok(Page { items: self.hydrate(page.items)?, next: page.next })
    }

    /// One triplet and the ledger events that reach it.
    pub fn triplet(&self, triplet_id: &str, policy: &Policy) -> Result<Option<TripletDetail>, StoreError> {
        let Some(found) = crate::ledger::triplet_sequence(self.tx, triplet_id)? else { return Ok(None) };
        let Some(info) = self.info_by_name(&found.sequence_id)? else { return Ok(None) };
        // The sequence is read once, without state and action texts; only this triplet is
        // evaluated and read in full.
        let rows = rows_of(self.tx, info.id, false, i64::MAX)?;
        let events = if info.has_events() { events_for(self.tx, &info, &rows, i64::MAX)? } else { Vec::new() };
        let o = order(&info.sequence_id, rows, &events, policy, self.now);
        let Some(pos) = o.rows.iter().position(|r| r.row == found.rowid) else { return Ok(None) };
        let ledger = events_reaching(&info.sequence_id, &o.rows, &events, pos).into_iter().cloned().collect();
        let explain = o.explain(pos, policy);
        let page = o.views(&[pos], policy).into_iter().map(|v| (found.rowid, v)).collect();
        let triplet = self.hydrate(page)?.pop().ok_or_else(|| StoreError::Corrupt("triplet position".into()))?;
        Ok(Some(TripletDetail { triplet, ledger, explain }))
    }
}

/// Walk rows in key order after `cursor`, `batch` at a time from `fetch(after, batch)` (key,
/// row), keeping what `visit` returns, until `limit` items, the end, or [`SCAN_BUDGET`] rows
/// scanned (then the page ends early with a cursor, so no page costs more than that).
fn scan_pages<R, T>(
    cursor: Option<i64>,
    limit: usize,
    mut fetch: impl FnMut(i64, usize) -> Result<Vec<(i64, R)>, StoreError>,
    mut visit: impl FnMut(R) -> Result<Option<T>, StoreError>,
) -> Result<Page<T>, StoreError> {
    let mut items = Vec::new();
    let mut after = cursor.unwrap_or(0);
    let mut scanned = 0usize;
    let batch = (limit + 1).max(64);
    loop {
        let rows = fetch(after, batch)?;
        let exhausted = rows.len() < batch;
        for (key, row) in rows {
            after = key;
            scanned += 1;
            if let Some(item) = visit(row)? {
                items.push(item);
                if items.len() == limit {
                    return Ok(Page { items, next: Some(after) });
                }
            }
        }
        if exhausted {
            return Ok(Page { items, next: None });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Page { items, next: Some(after) });
        }
    }
}

/// The triplets after the one stored under row `cursor` (from the start without one) that `keep`
/// accepts, at most `limit`, and the row to continue after when there may be more.
fn page_after(
    triplets: Vec<TripletView>,
    rows: &[i64],
    cursor: Option<i64>,
    limit: usize,
    keep: impl Fn(&TripletView) -> bool,
) -> (Vec<(i64, TripletView)>, Option<i64>) {
    let start = match cursor {
        None => 0,
        Some(row) => rows.iter().position(|r| *r == row).map_or(rows.len(), |p| p + 1),
    };
    let mut items = Vec::new();
    let mut last = None;
    for (pos, v) in triplets.into_iter().enumerate().skip(start) {
        if items.len() == limit {
            // There is at least one more triplet: continue after the last one returned.
            return (items, last.map(|p: usize| rows[p]));
        }
        if keep(&v) {
            items.push((rows[pos], v));
            last = Some(pos);
        }
    }
    (items, None)
}

impl ReadTx<'_> {
    /// One page of a sequence's triplets that pass `f`, after the row `cursor`: the sequence is
    /// put in order from its rows without state and action texts, and only the triplets looked at
    /// for the page are evaluated and read in full.
    fn triplet_page(
        &self,
        info: crate::rows::SeqInfo,
        policy: &Policy,
        cursor: Option<i64>,
        limit: usize,
        f: &TripletFilter,
    ) -> Result<(Vec<TripletView>, Option<i64>), StoreError> {
        let rows = rows_of(self.tx, info.id, false, i64::MAX)?;
        let events = if info.has_events() { events_for(self.tx, &info, &rows, i64::MAX)? } else { Vec::new() };
        let o = order(&info.sequence_id, rows, &events, policy, self.now);
        let n = o.rows.len();
        let mut i = match cursor {
            None => 0,
            Some(row) => o.rows.iter().position(|r| r.row == row).map_or(n, |p| p + 1),
        };
        let mut page: Vec<(i64, TripletView)> = Vec::new();
        let mut next = None;
        'chunks: while i < n {
            let positions: Vec<usize> = (i..(i + limit.max(16)).min(n)).collect();
            i = positions.last().map_or(n, |p| p + 1);
            for (pos, v) in positions.iter().zip(o.views(&positions, policy)) {
                if page.len() == limit {
                    // There is at least one more triplet: continue after the last one returned.
                    next = page.last().map(|(row, _)| *row);
                    break 'chunks;
                }
                if f.keeps(&v, o.complete) {
                    page.push((o.rows[*pos].row, v));
                }
            }
        }
        Ok((self.hydrate(page)?, next))
    }

    /// Fill in the state and action texts of a page's triplets.
    fn hydrate(&self, page: Vec<(i64, TripletView)>) -> Result<Vec<TripletView>, StoreError> {
        if self.tx.dialect() == crate::db::Dialect::Postgres && page.len() > 1 {
            // One statement for the page: a round trip per row costs more than the rows.
            let ids = serde_json::to_string(&page.iter().map(|(r, _)| *r).collect::<Vec<_>>()).map_err(|e| StoreError::Failed(e.to_string()))?;
            let mut texts: HashMap<i64, (String, String)> = HashMap::with_capacity(page.len());
            for r in self.tx.rows("SELECT id, state, action FROM spans WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?1))", params![ids])? {
                texts.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
            }
            return page
                .into_iter()
                .map(|(row, mut v)| {
                    let (state, action) = texts.remove(&row).ok_or_else(|| StoreError::Corrupt(format!("span row {row} vanished")))?;
                    v.state = state;
                    v.action = action;
                    Ok(v)
                })
                .collect();
        }
        let mut stmt = self.tx.prepare_cached("SELECT state, action FROM spans WHERE id = ?1")?;
        let mut items = Vec::with_capacity(page.len());
        for (row, mut v) in page {
            let (state, action): (String, String) = stmt.query_row(params![row], |r| Ok((r.get(0)?, r.get(1)?)))?;
            v.state = state;
            v.action = action;
            items.push(v);
        }
        Ok(items)
    }

    /// A sequence evaluated without its state and action texts (they do not change a reward),
    /// then one page of it with them: a page of a long sequence reads its own payloads only.
    fn page_of(
        &self,
        info: crate::rows::SeqInfo,
        policy: &Policy,
        cursor: Option<i64>,
        limit: usize,
        keep: impl Fn(&TripletView, bool) -> bool,
    ) -> Result<(SequenceSummary, Loaded, Vec<TripletView>, Option<i64>), StoreError> {
        let mut loaded = self.load(info, policy, false, Watermarks::ALL, self.now)?;
        let summary = loaded.summary();
        let complete = loaded.eval.complete;
        let triplets = std::mem::take(&mut loaded.eval.triplets);
        let (page, next) = page_after(triplets, &loaded.eval.rows, cursor, limit, |v| keep(v, complete));
        Ok((summary, loaded, self.hydrate(page)?, next))
    }
}
