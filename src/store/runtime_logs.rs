//! SQL for runtime logs (in `logs.db`, see `store::logs`): batched appends with each
//! container stream's read position and the project's byte count in the same transaction,
//! filtered reads, and the caps' pruning (per project, and over all projects together).
//! A line of a preview carries its id (`preview_id`; production's lines have none) and
//! counts toward its project's cap; a read names production or one preview, never both.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Row, ToSql};

use crate::{
    error::Result,
    model::logs::{LineFilter, LogStream, NewLine, RuntimeLine, LINE_OVERHEAD_BYTES},
};

use super::{Db, Tx};

const COLUMNS: &str =
    "seq, project_id, at_ns, instance, process, stream, line, preview_id, service";

fn from_row(row: &Row<'_>) -> rusqlite::Result<RuntimeLine> {
    let stream: String = row.get(5)?;
    Ok(RuntimeLine {
        seq: row.get(0)?,
        project_id: row.get(1)?,
        at_ns: row.get(2)?,
        instance: row.get(3)?,
        process: row.get(4)?,
        stream: LogStream::parse(&stream).unwrap_or(LogStream::Stdout),
        text: row.get(6)?,
        preview_id: row.get(7)?,
        service: row.get(8)?,
    })
}

/// What one append stored: the lines with their sequence numbers, the projects whose
/// byte count is now above `cap_bytes`, and the byte count of all projects together.
#[derive(Debug, Default)]
pub struct Appended {
    pub lines: Vec<RuntimeLine>,
    pub over_cap: Vec<String>,
    pub total_bytes: u64,
}

/// Stores a batch in one transaction: lines of projects and previews that still exist (a
/// project or preview removed while its instances were being read loses its remaining
/// lines, as it should), the read position of every container stream the batch advanced,
/// and each project's byte count.
///
/// The batch commits with `synchronous = NORMAL` (no fsync of its own; the next FULL commit
/// or checkpoint syncs it): after a power loss the last batches may roll back, but together
/// with their read positions, so those lines are read from Docker again. Edge lines of those
/// batches would be lost; nothing else is.
pub fn append(db: &mut Db, batch: Vec<NewLine>, cap_bytes: u64) -> Result<Appended> {
    relaxed_sync(db, |db| append_batch(db, batch, cap_bytes))
}

/// Runs `work` with `synchronous = NORMAL`, then restores FULL whatever happened.
fn relaxed_sync<T>(db: &mut Db, work: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
    db.connection.pragma_update(None, "synchronous", "NORMAL")?;
    let result = work(db);
    let restored = db.connection.pragma_update(None, "synchronous", "FULL");
    let value = result?;
    restored?;
    Ok(value)
}

fn append_batch(db: &mut Db, batch: Vec<NewLine>, cap_bytes: u64) -> Result<Appended> {
    let tx = Tx::begin(db)?;
    let mut existing: HashSet<String> = HashSet::new();
    let mut missing: HashSet<String> = HashSet::new();
    // Previews by id: whether each still exists.
    let mut previews: HashMap<String, bool> = HashMap::new();
    let mut added: HashMap<String, (i64, i64)> = HashMap::new();
    let mut stored = Vec::with_capacity(batch.len());
    {
        let mut exists = tx.prepare_cached("SELECT 1 FROM projects WHERE id = ?1")?;
        let mut preview_exists =
            tx.prepare_cached("SELECT 1 FROM previews WHERE id = ?1 AND project_id = ?2")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO runtime_logs (project_id, at_ns, instance, process, stream, line, preview_id, service) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut cursor = tx.prepare_cached(
            "INSERT INTO runtime_log_cursors (container_id, stream, project_id, last_ns, lines_at_last, updated_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (container_id, stream) DO UPDATE SET \
             last_ns = excluded.last_ns, lines_at_last = excluded.lines_at_last, updated_ns = excluded.updated_ns",
        )?;
        for line in batch {
            if missing.contains(&line.project_id) {
                continue;
            }
            if !existing.contains(&line.project_id) {
                if exists
                    .query_row([&line.project_id], |_| Ok(()))
                    .optional()?
                    .is_some()
                {
                    existing.insert(line.project_id.clone());
                } else {
                    missing.insert(line.project_id.clone());
                    continue;
                }
            }
            if let Some(preview_id) = &line.preview_id {
                let present = match previews.get(preview_id) {
                    Some(present) => *present,
                    None => {
                        let present = preview_exists
                            .query_row([preview_id, &line.project_id], |_| Ok(()))
                            .optional()?
                            .is_some();
                        previews.insert(preview_id.clone(), present);
                        present
                    }
                };
                if !present {
                    continue;
                }
            }
            insert.execute(params![
                line.project_id,
                line.at_ns,
                line.instance,
                line.process,
                line.stream.as_str(),
                line.text,
                line.preview_id,
                line.service
            ])?;
            let seq = tx.last_insert_rowid();
            if let Some(position) = &line.position {
                cursor.execute(params![
                    position.container_id,
                    line.stream.as_str(),
                    line.project_id,
                    position.last_ns,
                    position.lines_at_last,
                    line.at_ns
                ])?;
            }
            let entry = added.entry(line.project_id.clone()).or_default();
            entry.0 += (line.text.len() + LINE_OVERHEAD_BYTES) as i64;
            entry.1 += 1;
            stored.push(RuntimeLine {
                seq,
                project_id: line.project_id,
                at_ns: line.at_ns,
                instance: line.instance,
                process: line.process,
                stream: line.stream,
                text: line.text,
                preview_id: line.preview_id,
                service: line.service,
            });
        }
    }
    let mut over_cap = Vec::new();
    {
        let mut usage = tx.prepare_cached(
            "INSERT INTO runtime_log_usage (project_id, bytes, lines) VALUES (?1, ?2, ?3) \
             ON CONFLICT (project_id) DO UPDATE SET bytes = bytes + excluded.bytes, lines = lines + excluded.lines \
             RETURNING bytes",
        )?;
        for (project_id, (bytes, lines)) in &added {
            let total: i64 =
                usage.query_row(params![project_id, bytes, lines], |row| row.get(0))?;
            if total as u64 > cap_bytes {
                over_cap.push(project_id.clone());
            }
        }
    }
    let total_bytes = total_bytes(&tx)?;
    tx.commit()?;
    Ok(Appended {
        lines: stored,
        over_cap,
        total_bytes,
    })
}

/// The byte count of all projects' lines together (one row per project is summed).
pub fn total_bytes(db: &Db) -> Result<u64> {
    let total: i64 = db.query_row(
        "SELECT COALESCE(SUM(bytes), 0) FROM runtime_log_usage",
        [],
        |row| row.get(0),
    )?;
    Ok(total.max(0) as u64)
}

/// Drops up to `PRUNE_CHUNK` of the oldest lines of all projects together (stored order),
/// as many as the total byte count is above `target_bytes`; returns how many went (0 once
/// the total is at or below the target). Called in a loop, one transaction per call.
pub fn prune_total_chunk(db: &mut Db, target_bytes: u64) -> Result<u64> {
    relaxed_sync(db, |db| prune_total_chunk_synced(db, target_bytes))
}

fn prune_total_chunk_synced(db: &mut Db, target_bytes: u64) -> Result<u64> {
    let tx = Tx::begin(db)?;
    let excess = total_bytes(&tx)? as i64 - target_bytes as i64;
    if excess <= 0 {
        return Ok(0);
    }
    let mut freed = 0i64;
    let mut boundary = None;
    let mut by_project: HashMap<String, (i64, i64)> = HashMap::new();
    {
        let mut oldest = tx.prepare_cached(&format!(
            "SELECT seq, project_id, length(CAST(line AS BLOB)) + {LINE_OVERHEAD_BYTES} \
             FROM runtime_logs ORDER BY seq LIMIT {PRUNE_CHUNK}"
        ))?;
        let mut rows = oldest.query([])?;
        while let Some(row) = rows.next()? {
            let bytes: i64 = row.get(2)?;
            let entry = by_project.entry(row.get(1)?).or_default();
            entry.0 += bytes;
            entry.1 += 1;
            freed += bytes;
            boundary = Some(row.get::<_, i64>(0)?);
            if freed >= excess {
                break;
            }
        }
    }
    let Some(boundary) = boundary else {
        // No lines but a total above the target: the counts were off; make them true.
        tx.execute("UPDATE runtime_log_usage SET bytes = 0, lines = 0", [])?;
        tx.commit()?;
        return Ok(0);
    };
    tx.execute("DELETE FROM runtime_logs WHERE seq <= ?1", [boundary])?;
    let mut count = 0;
    for (project_id, (bytes, lines)) in by_project {
        tx.execute(
            "UPDATE runtime_log_usage SET bytes = MAX(bytes - ?2, 0), lines = MAX(lines - ?3, 0) WHERE project_id = ?1",
            params![project_id, bytes, lines],
        )?;
        count += lines;
    }
    tx.commit()?;
    Ok(count as u64)
}

/// Where the collector had read a container's stream up to: the Docker timestamp of the
/// last stored line and how many stored lines carry exactly that timestamp.
pub fn read_position(db: &Db, container_id: &str, stream: LogStream) -> Result<Option<(i64, i64)>> {
    Ok(db
        .query_row(
            "SELECT last_ns, lines_at_last FROM runtime_log_cursors WHERE container_id = ?1 AND stream = ?2",
            params![container_id, stream.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

/// The most lines one pruning transaction deletes, so the store is held briefly.
const PRUNE_CHUNK: i64 = 5_000;

/// Drops up to `PRUNE_CHUNK` of a project's oldest lines, as many as its byte count is above
/// `target_bytes`; returns how many went (0 once it is at or below the target). Called in a
/// loop, one transaction per call.
pub fn prune_chunk(db: &mut Db, project_id: &str, target_bytes: u64) -> Result<u64> {
    // A pruning lost to a power cut only brings old lines back, counted; no fsync needed.
    relaxed_sync(db, |db| prune_chunk_synced(db, project_id, target_bytes))
}

fn prune_chunk_synced(db: &mut Db, project_id: &str, target_bytes: u64) -> Result<u64> {
    let tx = Tx::begin(db)?;
    let current: Option<i64> = tx
        .query_row(
            "SELECT bytes FROM runtime_log_usage WHERE project_id = ?1",
            [project_id],
            |row| row.get(0),
        )
        .optional()?;
    let excess = current.unwrap_or(0) - target_bytes as i64;
    if excess <= 0 {
        return Ok(0);
    }
    let mut freed = 0i64;
    let mut count = 0i64;
    let mut boundary = None;
    {
        let mut oldest = tx.prepare_cached(&format!(
            "SELECT seq, length(CAST(line AS BLOB)) + {LINE_OVERHEAD_BYTES} FROM runtime_logs \
             WHERE project_id = ?1 ORDER BY seq LIMIT {PRUNE_CHUNK}"
        ))?;
        let mut rows = oldest.query([project_id])?;
        while let Some(row) = rows.next()? {
            freed += row.get::<_, i64>(1)?;
            count += 1;
            boundary = Some(row.get::<_, i64>(0)?);
            if freed >= excess {
                break;
            }
        }
    }
    match boundary {
        Some(boundary) => delete_through(&tx, project_id, boundary, freed, count)?,
        // No lines but a count above the target: the count was off; make it true.
        None => {
            tx.execute(
                "UPDATE runtime_log_usage SET bytes = 0, lines = 0 WHERE project_id = ?1",
                [project_id],
            )?;
        }
    }
    tx.commit()?;
    Ok(count as u64)
}

/// Projects with stored lines.
pub fn projects_with_lines(db: &Db) -> Result<Vec<String>> {
    let mut statement = db.prepare_cached("SELECT project_id FROM runtime_log_usage")?;
    let rows = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Drops up to `PRUNE_CHUNK` of a project's lines older than `cutoff_ns`, oldest first in
/// stored order (the scan stops at the first newer line); returns how many went.
pub fn prune_old_chunk(db: &mut Db, project_id: &str, cutoff_ns: i64) -> Result<u64> {
    let tx = Tx::begin(db)?;
    let mut freed = 0i64;
    let mut count = 0i64;
    let mut boundary = None;
    {
        let mut oldest = tx.prepare_cached(&format!(
            "SELECT seq, at_ns, length(CAST(line AS BLOB)) + {LINE_OVERHEAD_BYTES} FROM runtime_logs \
             WHERE project_id = ?1 ORDER BY seq LIMIT {PRUNE_CHUNK}"
        ))?;
        let mut rows = oldest.query([project_id])?;
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(1)? >= cutoff_ns {
                break;
            }
            boundary = Some(row.get::<_, i64>(0)?);
            freed += row.get::<_, i64>(2)?;
            count += 1;
        }
    }
    if let Some(boundary) = boundary {
        delete_through(&tx, project_id, boundary, freed, count)?;
    }
    tx.commit()?;
    Ok(count as u64)
}

/// Drops every line of a removed preview and takes them off its project's byte count; in
/// the caller's transaction (the preview's removal).
pub fn delete_preview(db: &Db, project_id: &str, preview_id: &str) -> Result<()> {
    let (bytes, lines): (i64, i64) = db.query_row(
        &format!(
            "SELECT COALESCE(SUM(length(CAST(line AS BLOB)) + {LINE_OVERHEAD_BYTES}), 0), COUNT(*) \
             FROM runtime_logs WHERE preview_id = ?1 AND project_id = ?2"
        ),
        params![preview_id, project_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if lines == 0 {
        return Ok(());
    }
    db.execute(
        "DELETE FROM runtime_logs WHERE preview_id = ?1 AND project_id = ?2",
        params![preview_id, project_id],
    )?;
    db.execute(
        "UPDATE runtime_log_usage SET bytes = MAX(bytes - ?2, 0), lines = MAX(lines - ?3, 0) WHERE project_id = ?1",
        params![project_id, bytes, lines],
    )?;
    Ok(())
}

/// Forgets the read positions of containers not heard from since `cutoff_ns`.
pub fn forget_positions_before(db: &Db, cutoff_ns: i64) -> Result<()> {
    db.execute(
        "DELETE FROM runtime_log_cursors WHERE updated_ns < ?1",
        [cutoff_ns],
    )?;
    Ok(())
}

fn delete_through(db: &Db, project_id: &str, boundary: i64, freed: i64, count: i64) -> Result<()> {
    db.execute(
        "DELETE FROM runtime_logs WHERE project_id = ?1 AND seq <= ?2",
        params![project_id, boundary],
    )?;
    db.execute(
        "UPDATE runtime_log_usage SET bytes = MAX(bytes - ?2, 0), lines = MAX(lines - ?3, 0) WHERE project_id = ?1",
        params![project_id, freed, count],
    )?;
    Ok(())
}

/// The WHERE clause and parameters of a filtered read of one project's lines.
fn filtered(
    project_id: &str,
    after: Option<i64>,
    since_ns: Option<i64>,
    until_ns: Option<i64>,
    filter: &LineFilter,
) -> (String, Vec<Box<dyn ToSql>>) {
    let mut clause = String::from("project_id = ?1");
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(project_id.to_owned())];
    // Production's lines, or one preview's (`=` lets the partial index on previews' lines
    // serve it).
    match &filter.preview_id {
        None => clause.push_str(" AND preview_id IS NULL"),
        Some(preview_id) => {
            values.push(Box::new(preview_id.clone()));
            clause.push_str(&format!(" AND preview_id = ?{}", values.len()));
        }
    }
    let mut add = |condition: &str, value: Box<dyn ToSql>| {
        values.push(value);
        clause.push_str(&format!(" AND {condition} ?{}", values.len()));
    };
    if let Some(after) = after {
        add("seq >", Box::new(after));
    }
    if let Some(since) = since_ns {
        add("at_ns >=", Box::new(since));
    }
    if let Some(until) = until_ns {
        add("at_ns <", Box::new(until));
    }
    if let Some(instance) = &filter.instance {
        add("instance =", Box::new(instance.clone()));
    }
    if let Some(stream) = filter.stream {
        add("stream =", Box::new(stream.as_str()));
    }
    if let Some(service) = &filter.service {
        add("service =", Box::new(service.clone()));
    }
    if let Some(contains) = &filter.contains {
        // instr is a plain, case-sensitive substring test: no LIKE wildcards to escape.
        values.push(Box::new(contains.clone()));
        clause.push_str(&format!(" AND instr(line, ?{}) > 0", values.len()));
    }
    (clause, values)
}

/// The newest `limit` lines in the window that pass the filter, oldest first, and whether
/// older matching lines were left out.
pub fn newest(
    db: &Db,
    project_id: &str,
    since_ns: Option<i64>,
    until_ns: Option<i64>,
    filter: &LineFilter,
    limit: u32,
) -> Result<(Vec<RuntimeLine>, bool)> {
    let (clause, mut values) = filtered(project_id, None, since_ns, until_ns, filter);
    values.push(Box::new(i64::from(limit) + 1));
    // Filters combine freely, so these statements are prepared per call, not cached.
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM runtime_logs WHERE {clause} ORDER BY seq DESC LIMIT ?{}",
        values.len()
    ))?;
    let mut lines = statement
        .query_map(rusqlite::params_from_iter(values.iter()), from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let truncated = lines.len() > limit as usize;
    lines.truncate(limit as usize);
    lines.reverse();
    Ok((lines, truncated))
}

/// Up to `limit` lines after `after` that pass the filter, in stored order: the replay of a
/// followed stream.
pub fn after(
    db: &Db,
    project_id: &str,
    after: i64,
    filter: &LineFilter,
    limit: u32,
) -> Result<Vec<RuntimeLine>> {
    let (clause, mut values) = filtered(project_id, Some(after), None, None, filter);
    values.push(Box::new(i64::from(limit)));
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM runtime_logs WHERE {clause} ORDER BY seq LIMIT ?{}",
        values.len()
    ))?;
    let lines = statement
        .query_map(rusqlite::params_from_iter(values.iter()), from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines)
}

/// The highest sequence number stored for any project: a follower starting "now" skips
/// everything up to it.
pub fn last_seq(db: &Db) -> Result<i64> {
    Ok(db.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM runtime_logs",
        [],
        |row| row.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::logs::ReadPosition, store::Store};

    fn line(project_id: &str, at_ns: i64, text: &str) -> NewLine {
        NewLine {
            project_id: project_id.to_owned(),
            at_ns,
            instance: "abc".to_owned(),
            process: "web".to_owned(),
            stream: LogStream::Stdout,
            text: text.to_owned(),
            preview_id: None,
            service: None,
            position: Some(ReadPosition {
                container_id: "c1".to_owned(),
                last_ns: at_ns,
                lines_at_last: 1,
            }),
        }
    }

    /// A state store with projects `prj` and `other` (account `acc`), and its `logs.db`.
    fn stores(dir: &std::path::Path) -> (Store, Store) {
        let state = Store::open(dir).unwrap();
        state
            .call_blocking(|c| {
                c.connection.execute_batch(
                    "INSERT INTO accounts (id, handle, created_at) VALUES ('acc', 'a', 'now');
                     INSERT INTO projects (id, account_id, name, status, created_at, updated_at)
                     VALUES ('prj', 'acc', 'p', 'running', 'now', 'now');
                     INSERT INTO projects (id, account_id, name, status, created_at, updated_at)
                     VALUES ('other', 'acc', 'o', 'running', 'now', 'now');",
                )?;
                Ok(())
            })
            .unwrap();
        let logs = state.open_logs().unwrap();
        (state, logs)
    }

    #[test]
    fn batches_are_stored_counted_pruned_oldest_first_and_fully_synced_after() {
        let dir = tempfile::tempdir().unwrap();
        let (_state, store) = stores(dir.path());
        let batch: Vec<NewLine> = (0..10)
            .map(|n| line("prj", n, &format!("line {n:02}")))
            .chain([line("gone", 99, "of a deleted project")])
            .collect();
        // Ten lines of 7 + 32 bytes: 390, over a cap of 300.
        let appended = store.call_blocking(|c| append(c, batch, 300)).unwrap();
        assert_eq!(
            appended.lines.len(),
            10,
            "the deleted project's line is skipped"
        );
        assert_eq!(appended.over_cap, vec!["prj".to_owned()]);
        let dropped = store.call_blocking(|c| prune_chunk(c, "prj", 270)).unwrap();
        assert_eq!(
            dropped, 4,
            "120 bytes over: three lines (117) are not enough, four are"
        );
        let (kept, truncated) = store
            .call_blocking(|c| newest(c, "prj", None, None, &LineFilter::default(), 100))
            .unwrap();
        assert!(!truncated);
        let texts: Vec<&str> = kept.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.first(), Some(&"line 04"));
        assert_eq!(texts.len(), 6);
        let position = store
            .call_blocking(|c| read_position(c, "c1", LogStream::Stdout))
            .unwrap();
        assert_eq!(position, Some((9, 1)));
        let synchronous: i64 = store
            .call_blocking(|c| {
                Ok(c.connection
                    .pragma_query_value(None, "synchronous", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(synchronous, 2, "FULL again after a log batch");
    }

    #[test]
    fn a_previews_lines_are_read_apart_and_leave_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = stores(dir.path());
        state
            .call_blocking(|c| {
                c.connection.execute_batch(
                    "INSERT INTO previews (id, project_id, hostname, git_ref, ttl_secs, trigger,
                        created_at, updated_at, expires_at)
                     VALUES ('prv_a', 'prj', 'a--p-a.test', 'a', 60, 'api', 'now', 'now', 'later');",
                )?;
                Ok(())
            })
            .unwrap();
        let of_preview = |preview: &str, at_ns: i64, text: &str| NewLine {
            preview_id: Some(preview.to_owned()),
            position: None,
            ..line("prj", at_ns, text)
        };
        let batch = vec![
            line("prj", 1, "production"),
            of_preview("prv_a", 2, "preview"),
            of_preview("prv_gone", 3, "of a removed preview"),
        ];
        let appended = store.call_blocking(|c| append(c, batch, 1 << 20)).unwrap();
        assert_eq!(
            appended.lines.len(),
            2,
            "the removed preview's line is skipped"
        );
        let read = |preview: Option<&str>| {
            let filter = LineFilter {
                preview_id: preview.map(str::to_owned),
                ..LineFilter::default()
            };
            let (lines, _) = store
                .call_blocking(move |c| newest(c, "prj", None, None, &filter, 100))
                .unwrap();
            lines.into_iter().map(|l| l.text).collect::<Vec<_>>()
        };
        assert_eq!(read(None), ["production"]);
        assert_eq!(read(Some("prv_a")), ["preview"]);
        let filter = LineFilter {
            preview_id: Some("prv_a".to_owned()),
            ..LineFilter::default()
        };
        let replayed = store
            .call_blocking(move |c| after(c, "prj", 0, &filter, 100))
            .unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].preview_id.as_deref(), Some("prv_a"));
        store
            .call_blocking(|c| delete_preview(c, "prj", "prv_a"))
            .unwrap();
        assert!(read(Some("prv_a")).is_empty());
        assert_eq!(read(None), ["production"]);
        let usage: (i64, i64) = store
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT bytes, lines FROM runtime_log_usage WHERE project_id = 'prj'",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!(
            usage,
            (("production".len() + LINE_OVERHEAD_BYTES) as i64, 1),
            "the preview's bytes are off the project's count"
        );
    }

    /// The total cap drops the oldest lines of all projects together (not one project's
    /// oldest first), keeps the counts true, and the file gives the space back.
    #[test]
    fn the_total_cap_drops_the_oldest_lines_across_projects_and_the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let (_state, store) = stores(dir.path());
        let text = "x".repeat(968); // 968 + 32 = 1000 bytes counted per line.
                                    // Old lines alternate between the projects, then newer ones: 4000 lines, 4 MB.
        for round in 0..40 {
            let batch: Vec<NewLine> = (0..100)
                .map(|n| {
                    let project = if n % 2 == 0 { "prj" } else { "other" };
                    NewLine {
                        position: None,
                        ..line(project, round * 100 + n, &text)
                    }
                })
                .collect();
            store.call_blocking(|c| append(c, batch, u64::MAX)).unwrap();
        }
        let logs_db = dir.path().join(super::super::logs::FILE);
        let file_size = |store: &Store| {
            store
                .call_blocking(|c| super::super::logs::checkpoint(c))
                .unwrap();
            std::fs::metadata(&logs_db).unwrap().len()
        };
        let before = file_size(&store);
        assert!(before > 4_000_000, "{before}");
        assert_eq!(store.call_blocking(|c| total_bytes(c)).unwrap(), 4_000_000);
        // Down to 1 MB: the 3000 oldest lines go, whichever project wrote them.
        let mut dropped = 0;
        loop {
            let went = store
                .call_blocking(|c| prune_total_chunk(c, 1_000_000))
                .unwrap();
            if went == 0 {
                break;
            }
            dropped += went;
        }
        assert_eq!(dropped, 3000);
        assert_eq!(store.call_blocking(|c| total_bytes(c)).unwrap(), 1_000_000);
        for project in ["prj", "other"] {
            let (kept, truncated) = store
                .call_blocking(move |c| {
                    newest(c, project, None, None, &LineFilter::default(), 5000)
                })
                .unwrap();
            assert!(!truncated);
            assert_eq!(
                kept.len(),
                500,
                "{project} keeps its newest half of the last 1000"
            );
            assert!(
                kept.iter().all(|l| l.at_ns >= 3000),
                "{project}: only the newest lines"
            );
            let usage: i64 = store
                .call_blocking(move |c| {
                    Ok(c.query_row(
                        "SELECT bytes FROM runtime_log_usage WHERE project_id = ?1",
                        [project],
                        |row| row.get(0),
                    )?)
                })
                .unwrap();
            assert_eq!(usage, 500_000);
        }
        let pages = store
            .call_blocking(|c| super::super::logs::page_use(c))
            .unwrap();
        assert!(
            pages.free > 500,
            "the pruned lines' pages are free: {pages:?}"
        );
        while store
            .call_blocking(super::super::logs::reclaim_step)
            .unwrap()
            > 0
        {}
        let after = file_size(&store);
        assert!(
            after < before / 2,
            "logs.db shrank from {before} to {after} bytes"
        );
    }
}
