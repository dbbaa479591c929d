//! Apps' SQLite databases (not Cantila's own store): copies made with SQLite's online
//! backup API, checked for integrity. Lives here because rusqlite stays in `store`.

use std::{path::Path, time::Duration};

use rusqlite::{backup::Backup, Connection, OpenFlags};

use crate::error::{Error, Result};

/// Copies the database at `source` (with its `-wal` beside it, if any) into a new single
/// file at `target` with the online backup API, then checks the copy's integrity.
/// `source` is opened read-write because SQLite replays a WAL it finds beside it.
pub fn backup_file(source: &Path, target: &Path) -> Result<()> {
    let invalid = |what: &str, err: rusqlite::Error| {
        Error::Invalid(format!("the app's SQLite database {what}: {err}"))
    };
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| invalid("cannot be opened", err))?;
    let mut to = Connection::open(target).map_err(|err| invalid("copy cannot be made", err))?;
    {
        let backup = Backup::new(&from, &mut to).map_err(|err| invalid("cannot be read", err))?;
        // 256 pages a step, no pause: nothing else writes to this copy.
        backup
            .run_to_completion(256, Duration::ZERO, None)
            .map_err(|err| invalid("cannot be copied", err))?;
    }
    check_integrity(&to)?;
    Ok(())
}

/// Checks a database file (a backup about to be restored, or just made).
pub fn check_file(path: &Path) -> Result<()> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| Error::Invalid(format!("the backup is not a SQLite database: {err}")))?;
    check_integrity(&connection)
}

fn check_integrity(connection: &Connection) -> Result<()> {
    let verdict: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|err| Error::Invalid(format!("the SQLite database is unreadable: {err}")))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the SQLite database failed its integrity check: {verdict}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_database_with_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("app.db");
        let writer = Connection::open(&source).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b');",
            )
            .unwrap();
        // The rows are in the WAL still: the writer is open and nothing checkpointed.
        let target = dir.path().join("copy.db");
        backup_file(&source, &target).unwrap();
        drop(writer);
        let copy = Connection::open(&target).unwrap();
        let rows: Vec<String> = copy
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, ["a", "b"]);
        check_file(&target).unwrap();
        std::fs::write(dir.path().join("junk.db"), b"not a database at all, really").unwrap();
        assert!(check_file(&dir.path().join("junk.db")).is_err());
    }
}
