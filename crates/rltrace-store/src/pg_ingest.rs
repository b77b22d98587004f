//! PostgreSQL's statements for a whole batch of spans: a round trip per row would cost more than
//! the rows, so the traces, resources and sequences a batch refers to are looked up and created
//! a statement each, the span rows go in as arrays in one `INSERT ... SELECT FROM unnest(...)`,
//! and the role and task links likewise. What becomes of each span is the same as row by row
//! (`ingest.rs` decides everything else for both backends).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::StoreError;
use postgres::types::{ToSql, Type};

use crate::db::{P, Sql};
use crate::ingest::{Caches, Fate, Links, Refs, bounded_insert, on_new_sequence, triplet_id_taken};
use crate::prepare::PreparedSpan;
use crate::writer::Group;

/// Look up, and create when missing, every trace, resource and sequence the batch refers to, and
/// leave them in the writer's caches (sequences created now are listed in `c.created`).
pub(crate) fn prefetch(tx: &dyn Sql, c: &mut Caches, spans: &[PreparedSpan], refused: &[Option<&'static str>], g: &mut Group) -> Result<(), StoreError> {
    let mut traces: Vec<&[u8]> = Vec::new();
    let mut seen_traces: HashSet<[u8; 16]> = HashSet::new();
    let mut resources: Vec<&Arc<str>> = Vec::new();
    let mut seen_resources: HashSet<&str> = HashSet::new();
    let mut sequences: Vec<&str> = Vec::new();
    let mut seen_sequences: HashSet<&str> = HashSet::new();
    // A span of the same trace, resource or sequence as the span before it adds nothing to look up.
    let mut last: Option<&PreparedSpan> = None;
    for (s, _) in spans.iter().zip(refused).filter(|(_, r)| r.is_none()) {
        let p = last.replace(s);
        if !p.is_some_and(|p| p.same_trace(s)) && !c.traces.contains_key(&s.trace_id) && seen_traces.insert(s.trace_id) {
            traces.push(&s.trace_id[..]);
        }
        if !p.is_some_and(|p| p.same_resource(s)) && !c.resources.contains_key(&s.resource) && seen_resources.insert(&s.resource) {
            resources.push(&s.resource);
        }
        if let Some(t) = &s.triplet
            && !p.is_some_and(|p| p.same_sequence(s))
            && !c.sequences.contains_key(&t.sequence_id)
            && seen_sequences.insert(&t.sequence_id)
        {
            sequences.push(&t.sequence_id);
        }
    }
    if !traces.is_empty() {
        let rows = tx.rows(
            "WITH new AS (INSERT INTO traces(trace_id) SELECT * FROM unnest($1) ON CONFLICT DO NOTHING RETURNING id, trace_id)
             SELECT id, trace_id, 1 FROM new UNION ALL SELECT id, trace_id, 0 FROM traces WHERE trace_id = ANY($1)",
            &[P::BA(traces)],
        )?;
        for r in rows {
            let id: i64 = r.get(0)?;
            let key: [u8; 16] = r.blob(1).and_then(|b| b.try_into().ok()).ok_or_else(|| StoreError::Corrupt("trace id".into()))?;
            if r.get::<_, i64>(2)? == 1 {
                // A trace first seen now has no stored span to be a duplicate of.
                c.new_traces.insert(id);
            }
            bounded_insert(&mut c.traces, key, id);
        }
    }
    if !resources.is_empty() {
        let texts: Vec<Option<&str>> = resources.iter().map(|r| Some(&***r)).collect();
        let rows = tx.rows(
            "WITH new AS (INSERT INTO resources(attributes) SELECT * FROM unnest($1) ON CONFLICT DO NOTHING RETURNING id, attributes)
             SELECT id, attributes FROM new UNION ALL SELECT id, attributes FROM resources WHERE attributes = ANY($1)",
            &[P::TA(texts)],
        )?;
        let by_text: HashMap<String, i64> = rows.iter().map(|r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(0)?))).collect::<Result<_, StoreError>>()?;
        for r in resources {
            if let Some(id) = by_text.get(&**r) {
                bounded_insert(&mut c.resources, Arc::clone(r), *id);
            }
        }
    }
    if !sequences.is_empty() {
        let names: Vec<Option<&str>> = sequences.iter().map(|s| Some(*s)).collect();
        let rows = tx.rows(
            "WITH new AS (INSERT INTO sequences(sequence_id) SELECT * FROM unnest($1) ON CONFLICT DO NOTHING RETURNING id, sequence_id)
             SELECT id, sequence_id, 1 FROM new UNION ALL SELECT id, sequence_id, 0 FROM sequences WHERE sequence_id = ANY($1)",
            &[P::TA(names)],
        )?;
        let mut new: Vec<(i64, String)> = Vec::new();
        for r in rows {
            let id: i64 = r.get(0)?;
            let name: String = r.get(1)?;
            if r.get::<_, i64>(2)? == 1 {
                new.push((id, name.clone()));
            }
            bounded_insert(&mut c.sequences, name, id);
        }
        if !new.is_empty() {
            // Rewards appended as pending before their sequence existed are counted on it.
            let keys: Vec<Option<&str>> = new.iter().map(|(_, n)| Some(n.as_str())).collect();
            let waiting: HashSet<String> = tx
                .rows("SELECT DISTINCT seq_key FROM reward_events WHERE seq_key = ANY($1)", &[P::TA(keys)])?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_, _>>()?;
            for (id, name) in &new {
                if waiting.contains(name) {
                    crate::ledger::count_pending_for_new_sequence(tx, *id, name)?;
                }
                on_new_sequence(tx, c, g, *id, name)?;
                c.created.insert(*id);
            }
        }
    }
    Ok(())
}

/// The span rows' `COPY`, in the order of [`SPAN_TYPES`].
const COPY_SPANS: &str = "COPY spans(id, trace_ref, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message,
    attributes, events, resource_ref, scope, seq_ref, triplet_id, seq_index, ts_us, state, action, role, task_id, phase,
    reward, reward_source, reward_components, propensity, seq_end, llm, sampling_probability, ledger_after, extras) FROM STDIN BINARY";

const SPAN_TYPES: [Type; 32] = [
    Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::INT8, Type::INT8, Type::FLOAT8, Type::INT8, Type::TEXT,
];

/// Store the span rows of a batch with one binary `COPY`; what became of each (a span left out
/// before, `None`, is answered by the caller).
///
/// The write lock is held (no other writer inserts meanwhile), so what is already stored is
/// looked up first (the spans of traces seen before, the explicit triplet ids) and the rest is
/// copied in: measured on this machine, `INSERT ... ON CONFLICT DO NOTHING` took about twice as
/// long as a plain insert of the same rows (docs/BENCHMARKS.md).
pub(crate) fn insert_rows(tx: &dyn Sql, c: &mut Caches, spans: &[PreparedSpan], refs: &[Option<Refs>]) -> Result<Vec<Fate>, StoreError> {
    let span_key = |s: &PreparedSpan, r: &Refs| (r.trace, i64::from_be_bytes(s.span_id));
    // Spans of traces stored before may be stored already.
    let old: Vec<(i64, i64)> = spans
        .iter()
        .zip(refs)
        .filter_map(|(s, r)| r.filter(|r| !c.new_traces.contains(&r.trace)).map(|r| span_key(s, &r)))
        .collect();
    let existing: HashSet<(i64, i64)> = if old.is_empty() {
        HashSet::new()
    } else {
        tx.rows(
            "SELECT s.trace_ref, s.span_id FROM spans s JOIN unnest($1, $2) AS k(trace_ref, span_id)
               ON s.trace_ref = k.trace_ref AND s.span_id = k.span_id",
            &[P::IA(old.iter().map(|k| Some(k.0)).collect()), P::IA(old.iter().map(|k| Some(k.1)).collect())],
        )?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?)))
        .collect::<Result<_, StoreError>>()?
    };
    c.new_traces.clear();
    let explicit: Vec<Option<&str>> = spans
        .iter()
        .zip(refs)
        .filter(|(_, r)| r.is_some())
        .filter_map(|(s, _)| s.triplet.as_ref().filter(|t| t.explicit_id).map(|t| Some(t.triplet_id.as_str())))
        .collect();
    let mut taken: HashSet<String> = if explicit.is_empty() {
        HashSet::new()
    } else {
        tx.rows("SELECT triplet_id FROM spans WHERE triplet_id = ANY($1)", &[P::TA(explicit)])?.iter().map(|r| r.get(0)).collect::<Result<_, _>>()?
    };
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    let mut fates = Vec::with_capacity(spans.len());
    let mut kept: Vec<(&PreparedSpan, Refs)> = Vec::new();
    for (s, r) in spans.iter().zip(refs) {
        let Some(r) = r else {
            fates.push(Fate::Refused(String::new()));
            continue;
        };
        let key = span_key(s, r);
        // The first copy is the one stored; a later one in the batch is a duplicate.
        if existing.contains(&key) || !seen.insert(key) {
            fates.push(Fate::Duplicate);
            continue;
        }
        if let Some(t) = s.triplet.as_ref().filter(|t| t.explicit_id)
            && !taken.insert(t.triplet_id.clone())
        {
            seen.remove(&key);
            fates.push(Fate::Refused(triplet_id_taken(s)));
            continue;
        }
        fates.push(Fate::Stored);
        kept.push((s, *r));
    }
    if !kept.is_empty() {
        let pg = tx.postgres().ok_or_else(|| StoreError::Failed("a PostgreSQL batch on another backend".into()))?;
        // The rows' ids are taken first, a block of the id sequence in arrival order, so the
        // role posting rows are made from them without reading the rows back. Every writer of
        // span rows holds the write lock, so no other session takes an id between the `nextval`
        // and the `setval` (were one to, its row or these would fail on the primary key, and the
        // group with it: nothing is stored twice).
        let n = kept.len() as i64;
        let first: i64 = tx
            .rows(
                "SELECT setval(q.s, nextval(q.s) + $1 - 1) - $1 + 1 FROM (SELECT CAST(pg_get_serial_sequence('spans', 'id') AS regclass) AS s) q",
                &[P::I(Some(n))],
            )?
            .first()
            .ok_or_else(|| StoreError::Corrupt("no span row ids".into()))?
            .get(0)?;
        let ids: Vec<i64> = (first..first + n).collect();
        let n = pg.copy_in(COPY_SPANS, &SPAN_TYPES, |w| {
            for ((s, r), id) in kept.iter().zip(&ids) {
                let t = s.triplet.as_ref();
                let row: [&(dyn ToSql + Sync); 32] = [
                    id,
                    &r.trace,
                    &i64::from_be_bytes(s.span_id),
                    &s.parent_span_id,
                    &s.name,
                    &i64::from(s.kind),
                    &s.start_ns,
                    &s.end_ns,
                    &i64::from(s.status_code),
                    &s.status_message,
                    &s.attributes,
                    &s.events,
                    &r.resource,
                    &s.scope,
                    &r.sequence,
                    &t.filter(|t| t.explicit_id).map(|t| t.triplet_id.as_str()),
                    &t.and_then(|t| t.seq_index),
                    &t.map(|t| t.ts_us),
                    &t.map(|t| t.state.as_str()),
                    &t.map(|t| t.action.as_str()),
                    &t.and_then(|t| t.role.as_deref()),
                    &t.and_then(|t| t.task_id.as_deref()),
                    &t.and_then(|t| t.phase.as_deref()),
                    &t.and_then(|t| t.reward),
                    &t.filter(|t| t.has_immediate).map(|t| t.reward_source.as_str()),
                    &t.and_then(|t| t.reward_components.as_deref()),
                    &t.and_then(|t| t.propensity),
                    &t.map(|t| i64::from(t.seq_end)),
                    &t.map(|t| i64::from(t.llm)),
                    &t.and_then(|t| t.sampling_probability),
                    &t.filter(|t| t.has_immediate).map(|_| c.last_event),
                    &s.extras.as_deref(),
                ];
                w.write(&row)?;
            }
            Ok(())
        })?;
        if n != kept.len() as u64 {
            return Err(StoreError::Failed(format!("{n} span rows copied of {}", kept.len())));
        }
        // The rows' log is written now: flushed while the group's other statements run.
        pg.flush_log_soon();
        index_roles(tx, &kept, &ids)?;
    }
    Ok(fates)
}

/// Most span ids in one row of `role_spans`.
pub(crate) const ROLE_CHUNK: i64 = 4096;

/// The role posting rows of rows just stored (`ids` in the order of `kept`): one per role and
/// per [`ROLE_CHUNK`] ids. Their ids are newer than any row stored before (the write lock is
/// held), so a role's rows do not overlap. The rows are made here, so the statement carries one
/// id per span and a few numbers per row (grouping the spans' roles in the database cost more
/// than the posting rows' insert, docs/BENCHMARKS.md).
fn index_roles(tx: &dyn Sql, kept: &[(&PreparedSpan, Refs)], ids: &[i64]) -> Result<(), StoreError> {
    let Some(&first) = ids.first() else { return Ok(()) };
    // Each row's ids, rows in the order their first id came.
    let mut rows: Vec<(&str, Vec<i64>)> = Vec::new();
    let mut row_of: HashMap<(&str, i64), usize> = HashMap::new();
    for ((s, r), id) in kept.iter().zip(ids) {
        if let (Some(_), Some(role)) = (r.sequence, s.triplet.as_ref().and_then(|t| t.role.as_deref())) {
            let i = *row_of.entry((role, (id - first) / ROLE_CHUNK)).or_insert_with(|| {
                rows.push((role, Vec::new()));
                rows.len() - 1
            });
            rows[i].1.push(*id);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    // One array of every id, each row its slice [lo, hi] (1-based) of it.
    let mut roles: Vec<Option<&str>> = Vec::with_capacity(rows.len());
    let mut lasts: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut lo: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut hi: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut all: Vec<Option<i64>> = Vec::with_capacity(ids.len());
    for (role, row) in &rows {
        roles.push(Some(role));
        lasts.push(row.last().copied());
        lo.push(Some(all.len() as i64 + 1));
        all.extend(row.iter().map(|id| Some(*id)));
        hi.push(Some(all.len() as i64));
    }
    tx.exec(
        "INSERT INTO role_spans(role, last_id, ids)
         SELECT r.role, r.last_id, a.ids[CAST(r.lo AS INT):CAST(r.hi AS INT)]
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS r(role, last_id, lo, hi), (SELECT $5::bigint[] AS ids) a",
        &[P::TA(roles), P::IA(lasts), P::IA(lo), P::IA(hi), P::IA(all)],
    )?;
    Ok(())
}

/// Insert the role and task links a statement or two each (plain inserts of the new ones: the
/// write lock is held); returns the task links that were new. Links of sequences this
/// transaction created cannot exist yet, so they are inserted without looking.
pub(crate) fn insert_links(tx: &dyn Sql, links: &Links, new_sequences: &HashSet<i64>) -> Result<Vec<(String, i64)>, StoreError> {
    let (fresh_roles, old_roles) = split_links(&links.roles, new_sequences);
    if !fresh_roles.is_empty() {
        tx.exec("INSERT INTO sequence_roles(role, seq_ref) SELECT * FROM unnest($1, $2)", &[ta(&fresh_roles), ia(&fresh_roles)])?;
    }
    if !old_roles.is_empty() {
        tx.exec(
            "INSERT INTO sequence_roles(role, seq_ref) SELECT DISTINCT a.role, a.seq_ref FROM unnest($1, $2) AS a(role, seq_ref)
             WHERE NOT EXISTS (SELECT 1 FROM sequence_roles x WHERE x.role = a.role AND x.seq_ref = a.seq_ref)",
            &[ta(&old_roles), ia(&old_roles)],
        )?;
    }
    let (fresh_tasks, old_tasks) = split_links(&links.tasks, new_sequences);
    let mut added: Vec<(String, i64)> = fresh_tasks.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    if !fresh_tasks.is_empty() {
        tx.exec("INSERT INTO task_sequences(task_id, seq_ref) SELECT * FROM unnest($1, $2)", &[ta(&fresh_tasks), ia(&fresh_tasks)])?;
    }
    if !old_tasks.is_empty() {
        let rows = tx.rows(
            "INSERT INTO task_sequences(task_id, seq_ref) SELECT DISTINCT a.task_id, a.seq_ref FROM unnest($1, $2) AS a(task_id, seq_ref)
             WHERE NOT EXISTS (SELECT 1 FROM task_sequences x WHERE x.task_id = a.task_id AND x.seq_ref = a.seq_ref)
             RETURNING task_id, seq_ref",
            &[ta(&old_tasks), ia(&old_tasks)],
        )?;
        for r in rows {
            added.push((r.get(0)?, r.get(1)?));
        }
    }
    Ok(added)
}

/// Delete the span rows of sequences `seqs`, take them out of the role posting rows (a row left
/// empty goes) and delete the sequences' role links; returns the number of span rows deleted.
///
/// A sequence's role links are the roles of its triplet rows (made by ingest from the rows it
/// stores; no other pass deletes a row with a sequence), so the deleted rows name every link to
/// delete, by its key: the links need no index by sequence, which cost each write group's
/// inserts of new links about a third of their time (docs/BENCHMARKS.md).
pub(crate) fn delete_sequence_spans(tx: &dyn Sql, seqs: &[i64]) -> Result<u64, StoreError> {
    let gone = tx.rows("DELETE FROM spans WHERE seq_ref = ANY($1) RETURNING id, role, seq_ref", &[P::IA(seqs.iter().map(|s| Some(*s)).collect())])?;
    let mut roles: Vec<Option<String>> = Vec::new();
    let mut ids: Vec<Option<i64>> = Vec::new();
    let mut links: HashSet<(String, i64)> = HashSet::new();
    for r in &gone {
        if let Some(role) = r.get::<_, Option<String>>(1)? {
            links.insert((role.clone(), r.get(2)?));
            roles.push(Some(role));
            ids.push(Some(r.get(0)?));
        }
    }
    if !links.is_empty() {
        let (link_roles, link_seqs): (Vec<Option<&str>>, Vec<Option<i64>>) = links.iter().map(|(r, s)| (Some(r.as_str()), Some(*s))).unzip();
        tx.exec(
            "DELETE FROM sequence_roles x USING unnest($1::text[], $2::bigint[]) AS d(role, seq_ref) WHERE x.role = d.role AND x.seq_ref = d.seq_ref",
            &[P::TA(link_roles), P::IA(link_seqs)],
        )?;
    }
    if !ids.is_empty() {
        // Each deleted id is in the first row of its role ending at or after it (rows do not
        // overlap); those rows keep the ids that still have a span.
        let roles: Vec<Option<&str>> = roles.iter().map(|r| r.as_deref()).collect();
        tx.exec(
            "WITH d(role, id) AS (SELECT * FROM unnest($1::text[], $2::bigint[])),
             hit AS (SELECT DISTINCT p.role, p.last_id FROM d CROSS JOIN LATERAL
                       (SELECT r.role, r.last_id FROM role_spans r WHERE r.role = d.role AND r.last_id >= d.id ORDER BY r.last_id LIMIT 1) p),
             kept AS (SELECT r.role, r.last_id,
                        ARRAY(SELECT u.id FROM unnest(r.ids) WITH ORDINALITY AS u(id, o) WHERE EXISTS (SELECT 1 FROM spans s WHERE s.id = u.id) ORDER BY u.o) AS ids
                      FROM role_spans r JOIN hit ON r.role = hit.role AND r.last_id = hit.last_id),
             emptied AS (DELETE FROM role_spans r USING kept k WHERE r.role = k.role AND r.last_id = k.last_id AND cardinality(k.ids) = 0)
             UPDATE role_spans r SET ids = k.ids FROM kept k WHERE r.role = k.role AND r.last_id = k.last_id AND cardinality(k.ids) > 0",
            &[P::TA(roles), P::IA(ids)],
        )?;
    }
    Ok(gone.len() as u64)
}

fn ia<'a>(l: &[(&'a str, i64)]) -> P<'a> {
    P::IA(l.iter().map(|(_, s)| Some(*s)).collect())
}

fn ta<'a>(l: &[(&'a str, i64)]) -> P<'a> {
    P::TA(l.iter().map(|(t, _)| Some(*t)).collect())
}

/// Links as `(role or task id, sequence row)`.
type LinkRefs<'a> = Vec<(&'a str, i64)>;

/// Links of sequences created now, each once, and the others.
fn split_links<'a>(links: &'a [(String, i64)], new_sequences: &HashSet<i64>) -> (LinkRefs<'a>, LinkRefs<'a>) {
    let mut seen: HashSet<(&str, i64)> = HashSet::new();
    let mut fresh = Vec::new();
    let mut old = Vec::new();
    for (l, s) in links {
        if new_sequences.contains(s) {
            if seen.insert((l.as_str(), *s)) {
                fresh.push((l.as_str(), *s));
            }
        } else {
            old.push((l.as_str(), *s));
        }
    }
    (fresh, old)
}

/// The end of a group's writes to its sequences: the aggregates of the sequences it added
/// triplets to and their rewarded counts in one statement, then the rewarded counts of the other
/// sequences it changed; returns the change of the store's rewarded total.
///
/// The counts are read before the statement and the aggregates added to them here (the write
/// lock is held: nothing else changes these rows meanwhile), so a rewarded count the counts tell
/// is written with the aggregates instead of by a second update of the row. A sequence whose
/// count needs its triplets evaluated is counted after the statement, on the rows as it left them.
pub(crate) fn flush_group(tx: &dyn Sql, aggs: &HashMap<i64, crate::ingest::SeqAgg>, dirty: &HashSet<i64>) -> Result<i64, StoreError> {
    let mut ids: Vec<i64> = aggs.keys().chain(dirty).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(0);
    }
    let rows = tx.rows(
        &format!("SELECT id, {} FROM sequences WHERE id = ANY($1)", crate::rows::COUNT_COLS),
        &[P::IA(ids.iter().map(|id| Some(*id)).collect())],
    )?;
    let mut stored: HashMap<i64, (rltrace_core::sequence::SequenceCounts, i64)> = HashMap::with_capacity(rows.len());
    for r in &rows {
        stored.insert(r.get(0)?, crate::rows::seq_counts(r, 1)?);
    }
    let mut delta = 0i64;
    // Rewarded counts written with the aggregates, written alone, and to be evaluated.
    let mut with_aggs: HashMap<i64, i64> = HashMap::new();
    let mut alone: Vec<(i64, i64)> = Vec::new();
    let mut later = Vec::new();
    for id in &ids {
        let (mut counts, was) = stored.remove(id).ok_or_else(|| StoreError::Corrupt(format!("sequence row {id} is gone")))?;
        if let Some(a) = aggs.get(id) {
            counts.triplets += a.count;
            counts.immediate += a.local;
        }
        if !dirty.contains(id) {
            continue;
        }
        match rltrace_core::sequence::rewarded_from_counts(&counts) {
            Some(now) => {
                delta += now - was;
                if aggs.contains_key(id) {
                    with_aggs.insert(*id, now);
                } else if now != was {
                    alone.push((*id, now));
                }
            }
            None => later.push((*id, counts, was)),
        }
    }
    if !aggs.is_empty() {
        let mut agg_ids: Vec<i64> = aggs.keys().copied().collect();
        agg_ids.sort_unstable();
        let col = |f: &dyn Fn(&crate::ingest::SeqAgg) -> i64| P::IA(agg_ids.iter().map(|id| Some(f(&aggs[id]))).collect());
        let params = [
            P::IA(agg_ids.iter().map(|id| Some(*id)).collect()),
            col(&|a| a.count),
            col(&|a| a.indexed),
            col(&|a| a.first),
            col(&|a| a.last),
            col(&|a| i64::from(a.ended)),
            col(&|a| a.local),
            P::TA(agg_ids.iter().map(|id| aggs[id].rollout.as_ref().map(|l| l.rollout_id.as_str())).collect()),
            P::TA(agg_ids.iter().map(|id| aggs[id].rollout.as_ref().map(|l| l.attempt_id.as_str())).collect()),
            P::IA(agg_ids.iter().map(|id| with_aggs.get(id).copied()).collect()),
        ];
        let n = tx.exec(
            "UPDATE sequences q SET triplet_count = q.triplet_count + a.n, indexed_count = q.indexed_count + a.idx,
               first_us = LEAST(coalesce(q.first_us, a.lo), a.lo), last_us = GREATEST(coalesce(q.last_us, a.hi), a.hi),
               ended = GREATEST(q.ended, a.fin), local_rewards = q.local_rewards + a.loc,
               attempt_id = CASE WHEN q.rollout_id IS NULL THEN a.att ELSE q.attempt_id END, rollout_id = coalesce(q.rollout_id, a.rol),
               rewarded_count = coalesce(a.rw, q.rewarded_count)
             FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS a(id, n, idx, lo, hi, fin, loc, rol, att, rw)
             WHERE q.id = a.id",
            &params,
        )?;
        if n != agg_ids.len() as u64 {
            return Err(StoreError::Corrupt(format!("{n} sequence rows updated of {}", agg_ids.len())));
        }
    }
    for (id, counts, was) in later {
        let now = crate::rewarded::count_now(tx, id, &counts)?;
        delta += now - was;
        if now != was {
            alone.push((id, now));
        }
    }
    crate::rewarded::set_counts(tx, &alone)?;
    Ok(delta)
}
