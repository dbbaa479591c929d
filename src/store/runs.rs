//! SQL for one-off runs and the lines they wrote. A run's status moves forward only:
//! `pending` → `running` → a final status, and a final status is never overwritten, so
//! whichever of the waiter, a cancel or the start-up recovery records the end first wins.
//! Output is capped per run (oldest lines go first) and finished runs beyond a project's
//! history are pruned with their lines.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    clock,
    error::Result,
    model::run::{Run, RunCommand, RunLine, RunStatus, RunStream, RunTrigger},
};

use super::{Db, Tx};

const COLUMNS: &str = "seq, id, account_id, project_id, deploy_id, command, status, exit_code, error, trigger, job_id, started_by, size, timeout_secs, interactive, container_id, created_at, started_at, finished_at, duration_ms";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Run)> {
    let command: String = row.get(5)?;
    let status: String = row.get(6)?;
    let trigger: String = row.get(9)?;
    let timeout: i64 = row.get(13)?;
    Ok((
        row.get(0)?,
        Run {
            id: row.get(1)?,
            account_id: row.get(2)?,
            project_id: row.get(3)?,
            deploy_id: row.get(4)?,
            command: RunCommand::from_stored(serde_json::from_str(&command).unwrap_or_default()),
            // The CHECK constraint admits only known words.
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
            exit_code: row.get(7)?,
            error: row.get(8)?,
            trigger: RunTrigger::from_stored(&trigger, row.get(10)?),
            started_by: row.get(11)?,
            size: row.get(12)?,
            timeout_secs: u64::try_from(timeout).unwrap_or(0),
            interactive: row.get(14)?,
            container_id: row.get(15)?,
            created_at: row.get(16)?,
            started_at: row.get(17)?,
            finished_at: row.get(18)?,
            duration_ms: row.get(19)?,
        },
    ))
}

pub fn insert(db: &Db, run: &Run) -> Result<()> {
    let command = serde_json::to_string(run.command.args()).unwrap_or_else(|_| "[]".to_owned());
    db.execute(
        "INSERT INTO runs (id, account_id, project_id, deploy_id, command, status, trigger, job_id, started_by, size, timeout_secs, interactive, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            run.id,
            run.account_id,
            run.project_id,
            run.deploy_id,
            command,
            run.status.as_str(),
            run.trigger.as_str(),
            run.trigger.job_id(),
            run.started_by,
            run.size,
            i64::try_from(run.timeout_secs).unwrap_or(i64::MAX),
            run.interactive,
            run.created_at,
        ],
    )?;
    Ok(())
}

pub fn by_id(db: &Db, id: &str) -> Result<Option<Run>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .map(|(_, run)| run))
}

/// The project's runs, newest first, strictly older than `before` when given.
pub fn page(db: &Db, project_id: &str, before: Option<i64>, limit: u32) -> Result<Vec<(i64, Run)>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs WHERE project_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = statement
        .query_map(
            params![project_id, before.unwrap_or(i64::MAX), limit],
            from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Runs not over yet (`pending` or `running`), oldest first.
pub fn active(db: &Db) -> Result<Vec<Run>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs WHERE status IN ('pending', 'running') ORDER BY seq"
    ))?;
    let rows = statement
        .query_map([], from_row)?
        .map(|row| row.map(|(_, run)| run))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A job's runs not over yet, oldest first.
pub fn active_of_job(db: &Db, job_id: &str) -> Result<Vec<Run>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs WHERE job_id = ?1 AND status IN ('pending', 'running') ORDER BY seq"
    ))?;
    let rows = statement
        .query_map([job_id], from_row)?
        .map(|row| row.map(|(_, run)| run))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How many of the project's runs are not over yet.
pub fn active_count(db: &Db, project_id: &str) -> Result<u32> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM runs WHERE project_id = ?1 AND status IN ('pending', 'running')",
        [project_id],
        |row| row.get(0),
    )?)
}

/// Records the container made for a run (before it starts, so a crash right after leaves
/// a container the recovery can name).
pub fn set_container(db: &Db, id: &str, container_id: &str) -> Result<()> {
    db.execute(
        "UPDATE runs SET container_id = ?2 WHERE id = ?1",
        params![id, container_id],
    )?;
    Ok(())
}

/// `pending` → `running` at `at`; false when the run is no longer pending (canceled).
pub fn set_running(db: &Db, id: &str, at: &str) -> Result<bool> {
    Ok(db.execute(
        "UPDATE runs SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'pending'",
        params![id, at],
    )? > 0)
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub at: String,
}

/// Records a run's end, its duration measured from its start (none if it never started);
/// false when the run had already ended (the first ending recorded stands).
pub fn finish(db: &Db, id: &str, ending: &Ending) -> Result<bool> {
    let started: Option<Option<String>> = db
        .query_row(
            "SELECT started_at FROM runs WHERE id = ?1 AND status IN ('pending', 'running')",
            [id],
            |row| row.get(0),
        )
        .optional()?;
    let Some(started) = started else {
        return Ok(false);
    };
    let duration_ms = started
        .as_deref()
        .and_then(clock::parse_nanos)
        .zip(clock::parse_nanos(&ending.at))
        .map(|(from, to)| ((to - from) / 1_000_000).max(0));
    Ok(db.execute(
        "UPDATE runs SET status = ?2, exit_code = ?3, error = ?4, finished_at = ?5, duration_ms = ?6
         WHERE id = ?1 AND status IN ('pending', 'running')",
        params![
            id,
            ending.status.as_str(),
            ending.exit_code,
            ending.error,
            ending.at,
            duration_ms
        ],
    )? > 0)
}

/// What a run's kept output may weigh.
#[derive(Debug, Clone, Copy)]
pub struct OutputCap {
    pub max_lines: u32,
    pub max_bytes: u64,
}

/// Appends lines to a run's output inside the caller's transaction, then drops its oldest
/// lines beyond the cap. Lines of a run that is gone (its project deleted) are dropped.
pub fn append_output(tx: &Tx<'_>, run_id: &str, lines: &[RunLine], cap: OutputCap) -> Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
        [run_id],
        |row| row.get(0),
    )?;
    if !exists || lines.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO run_output (run_id, seq, at, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut added: i64 = 0;
    for line in lines {
        insert.execute(params![
            run_id,
            line.seq,
            line.at,
            line.stream.as_str(),
            line.line
        ])?;
        added += i64::try_from(line.line.len()).unwrap_or(i64::MAX);
    }
    tx.execute(
        "UPDATE runs SET output_bytes = output_bytes + ?2 WHERE id = ?1",
        params![run_id, added],
    )?;
    let last = lines.last().map(|line| line.seq).unwrap_or_default();
    let removed: i64 = tx.query_row(
        "SELECT COALESCE(SUM(LENGTH(CAST(line AS BLOB))), 0) FROM run_output WHERE run_id = ?1 AND seq <= ?2",
        params![run_id, last - i64::from(cap.max_lines)],
        |row| row.get(0),
    )?;
    if removed > 0 || last > i64::from(cap.max_lines) {
        tx.execute(
            "DELETE FROM run_output WHERE run_id = ?1 AND seq <= ?2",
            params![run_id, last - i64::from(cap.max_lines)],
        )?;
        tx.execute(
            "UPDATE runs SET output_bytes = output_bytes - ?2 WHERE id = ?1",
            params![run_id, removed],
        )?;
    }
    let bytes: i64 = tx.query_row(
        "SELECT output_bytes FROM runs WHERE id = ?1",
        [run_id],
        |row| row.get(0),
    )?;
    let max_bytes = i64::try_from(cap.max_bytes).unwrap_or(i64::MAX);
    if bytes > max_bytes {
        // The oldest lines whose weight brings the run under its cap go, in order.
        let mut oldest = tx.prepare_cached(
            "SELECT seq, LENGTH(CAST(line AS BLOB)) FROM run_output WHERE run_id = ?1 ORDER BY seq",
        )?;
        let mut rows = oldest.query([run_id])?;
        let (mut excess, mut through, mut freed) = (bytes - max_bytes, None, 0i64);
        while excess > 0 {
            let Some(row) = rows.next()? else { break };
            let (seq, weight): (i64, i64) = (row.get(0)?, row.get(1)?);
            excess -= weight;
            freed += weight;
            through = Some(seq);
        }
        drop(rows);
        if let Some(through) = through {
            tx.execute(
                "DELETE FROM run_output WHERE run_id = ?1 AND seq <= ?2",
                params![run_id, through],
            )?;
            tx.execute(
                "UPDATE runs SET output_bytes = output_bytes - ?2 WHERE id = ?1",
                params![run_id, freed],
            )?;
        }
    }
    Ok(())
}

/// Up to `limit` stored lines with `seq` greater than `after`, in order.
pub fn output_after(db: &Db, run_id: &str, after: i64, limit: u32) -> Result<Vec<RunLine>> {
    let mut statement = db.prepare_cached(
        "SELECT seq, at, stream, line FROM run_output WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let lines = statement
        .query_map(params![run_id, after, limit], |row| {
            let stream: String = row.get(2)?;
            Ok(RunLine {
                seq: row.get(0)?,
                at: row.get(1)?,
                stream: RunStream::parse(&stream).unwrap_or(RunStream::Stdout),
                line: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines)
}

/// The sequence number of a run's last stored line (0 when there is none).
pub fn last_output_seq(db: &Db, run_id: &str) -> Result<i64> {
    Ok(db.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM run_output WHERE run_id = ?1",
        [run_id],
        |row| row.get(0),
    )?)
}

/// The weight of a run's kept output in bytes.
pub fn output_bytes(db: &Db, run_id: &str) -> Result<i64> {
    Ok(db
        .query_row(
            "SELECT output_bytes FROM runs WHERE id = ?1",
            [run_id],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Deletes the project's finished runs beyond the newest `keep` (their lines go with
/// them); runs not over yet are never pruned. Returns how many went.
pub fn prune_history(db: &Db, project_id: &str, keep: u32) -> Result<usize> {
    Ok(db.execute(
        "DELETE FROM runs WHERE project_id = ?1 AND status NOT IN ('pending', 'running')
         AND seq < COALESCE((SELECT seq FROM runs WHERE project_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2), 0)",
        params![project_id, keep.saturating_sub(1)],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store_with_project() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .call_blocking(|db| {
                db.execute(
                    "INSERT INTO accounts (id, handle, created_at) VALUES ('acc_a', 'ada', 't')",
                    [],
                )?;
                db.execute(
                    "INSERT INTO projects (id, account_id, name, status, created_at, updated_at) VALUES ('prj_a', 'acc_a', 'blog', 'running', 't', 't')",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn run(id: &str) -> Run {
        Run {
            id: id.to_owned(),
            account_id: "acc_a".to_owned(),
            project_id: "prj_a".to_owned(),
            deploy_id: "dep_a".to_owned(),
            command: RunCommand::from_stored(vec!["true".to_owned()]),
            status: RunStatus::Pending,
            exit_code: None,
            error: None,
            trigger: RunTrigger::Manual,
            started_by: "tok_a".to_owned(),
            size: "small".to_owned(),
            timeout_secs: 60,
            interactive: false,
            container_id: None,
            created_at: clock::now(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
        }
    }

    fn line(seq: i64, text: &str) -> RunLine {
        RunLine {
            seq,
            at: clock::now(),
            stream: RunStream::Stdout,
            line: text.to_owned(),
        }
    }

    #[test]
    fn a_run_moves_forward_only_and_the_first_ending_stands() {
        let (_dir, store) = store_with_project();
        store
            .call_blocking(|db| {
                insert(db, &run("run_a"))?;
                assert_eq!(active_count(db, "prj_a")?, 1);
                assert!(set_running(db, "run_a", "2026-01-01T00:00:00.000Z")?);
                assert!(!set_running(db, "run_a", "2026-01-01T00:00:01.000Z")?);
                let ending = |status, at: &str| Ending {
                    status,
                    exit_code: Some(3),
                    error: None,
                    at: at.to_owned(),
                };
                assert!(finish(
                    db,
                    "run_a",
                    &ending(RunStatus::Failed, "2026-01-01T00:00:01.500Z")
                )?);
                assert!(!finish(
                    db,
                    "run_a",
                    &ending(RunStatus::Canceled, "2026-01-01T00:00:09.000Z")
                )?);
                let stored = by_id(db, "run_a")?.unwrap();
                assert_eq!(stored.status, RunStatus::Failed);
                assert_eq!(stored.exit_code, Some(3));
                assert_eq!(stored.duration_ms, Some(1500));
                assert_eq!(active_count(db, "prj_a")?, 0);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn output_keeps_the_newest_lines_within_the_cap() {
        let (_dir, store) = store_with_project();
        store
            .call_blocking(|db| {
                insert(db, &run("run_a"))?;
                let by_lines = OutputCap {
                    max_lines: 3,
                    max_bytes: 1000,
                };
                db.write(|tx| {
                    let lines: Vec<RunLine> = (1..=5).map(|n| line(n, "0123456789")).collect();
                    append_output(tx, "run_a", &lines, by_lines)
                })?;
                let kept: Vec<i64> = output_after(db, "run_a", 0, 100)?
                    .iter()
                    .map(|l| l.seq)
                    .collect();
                assert_eq!(kept, [3, 4, 5]);
                assert_eq!(output_bytes(db, "run_a")?, 30);
                let by_bytes = OutputCap {
                    max_lines: 100,
                    max_bytes: 25,
                };
                db.write(|tx| append_output(tx, "run_a", &[line(6, "0123456789")], by_bytes))?;
                let kept: Vec<i64> = output_after(db, "run_a", 0, 100)?
                    .iter()
                    .map(|l| l.seq)
                    .collect();
                assert_eq!(kept, [5, 6]);
                assert_eq!(output_bytes(db, "run_a")?, 20);
                assert_eq!(last_output_seq(db, "run_a")?, 6);
                // A replay that resumes inside the pruned part starts at the oldest kept line.
                assert_eq!(output_after(db, "run_a", 2, 1)?[0].seq, 5);
                // Lines of a run that is gone are dropped, not an error.
                db.write(|tx| append_output(tx, "run_gone", &[line(1, "x")], by_bytes))?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn history_keeps_the_newest_runs_and_every_active_one() {
        let (_dir, store) = store_with_project();
        store
            .call_blocking(|db| {
                insert(db, &run("run_1"))?; // still pending: never pruned
                for n in 2..=6 {
                    let id = format!("run_{n}");
                    insert(db, &run(&id))?;
                    finish(
                        db,
                        &id,
                        &Ending {
                            status: RunStatus::Succeeded,
                            exit_code: Some(0),
                            error: None,
                            at: clock::now(),
                        },
                    )?;
                }
                db.write(|tx| {
                    append_output(
                        tx,
                        "run_2",
                        &[line(1, "x")],
                        OutputCap {
                            max_lines: 9,
                            max_bytes: 99,
                        },
                    )
                })?;
                assert_eq!(prune_history(db, "prj_a", 3)?, 2);
                let left: Vec<String> = page(db, "prj_a", None, 100)?
                    .into_iter()
                    .map(|(_, r)| r.id)
                    .collect();
                assert_eq!(left, ["run_6", "run_5", "run_4", "run_1"]);
                assert!(output_after(db, "run_2", 0, 10)?.is_empty());
                Ok(())
            })
            .unwrap();
    }
}
