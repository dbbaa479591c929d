//! The logs store: `<data_dir>/logs.db`, a second SQLite file for runtime log lines (their
//! per-project byte counts and read positions) and metric points, with a schema version
//! list of its own. Keeping them apart from `cantila.db` means a log batch, a prune or a
//! vacuum never holds the write lock API requests wait for, and the file can shrink
//! (`auto_vacuum = INCREMENTAL`) after pruning.
//! Its connections attach `cantila.db` read-only as `state`, so the lines' checks against
//! projects and previews read the desired state as it is committed, without ever taking its
//! write lock (a read-only attachment joins a write transaction as a reader only).
//! Invariant: the lines and points `cantila.db` held before its schema 21 are copied here,
//! in one transaction that also records the copy (`imported_from_state`), before migration 21
//! drops them there; a copy interrupted before that commit is done again from the start, and
//! a recorded copy is never done twice.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

use super::{restrict_to_owner, Db, OpenError, Store};

/// The file's name in the data directory.
pub const FILE: &str = "logs.db";

/// The WAL is cut back to this size after a checkpoint, so a burst of log writes does not
/// leave a large `-wal` file behind.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Pages one reclaiming step frees (4 KiB each): the vacuum runs in steps so reads of the
/// lines get their turn between them.
const RECLAIM_PAGES: i64 = 2048;

const STEPS: &[&str] = &[
    // 1 (logstore): runtime log lines, per-project byte counts and container read positions,
    // and metric points, as cantila.db held them up to its schema 20 (no foreign keys: the
    // projects are in the other file; lines and points of removed projects and previews are
    // swept by the log writer); and the record of the copy from cantila.db.
    "CREATE TABLE runtime_logs (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id  TEXT NOT NULL,
        at_ns       INTEGER NOT NULL,
        instance    TEXT NOT NULL,
        process     TEXT NOT NULL,
        stream      TEXT NOT NULL,
        line        TEXT NOT NULL,
        preview_id  TEXT,
        service     TEXT
    );
    CREATE INDEX runtime_logs_by_project ON runtime_logs(project_id, seq);
    CREATE INDEX runtime_logs_by_preview ON runtime_logs(preview_id, seq)
        WHERE preview_id IS NOT NULL;
    CREATE TABLE runtime_log_usage (
        project_id  TEXT PRIMARY KEY,
        bytes       INTEGER NOT NULL,
        lines       INTEGER NOT NULL
    );
    CREATE TABLE runtime_log_cursors (
        container_id  TEXT NOT NULL,
        stream        TEXT NOT NULL,
        project_id    TEXT NOT NULL,
        last_ns       INTEGER NOT NULL,
        lines_at_last INTEGER NOT NULL,
        updated_ns    INTEGER NOT NULL,
        PRIMARY KEY (container_id, stream)
    );
    CREATE TABLE metric_instance_points (
        project_id          TEXT NOT NULL,
        resolution          INTEGER NOT NULL,
        at                  INTEGER NOT NULL,
        instance_id         TEXT NOT NULL,
        cpu_percent         REAL,
        cpu_limit_percent   REAL,
        memory_bytes        INTEGER,
        memory_limit_bytes  INTEGER,
        net_rx_bytes        INTEGER NOT NULL,
        net_tx_bytes        INTEGER NOT NULL,
        block_read_bytes    INTEGER NOT NULL,
        block_write_bytes   INTEGER NOT NULL,
        restarts            INTEGER NOT NULL,
        preview_id          TEXT,
        service             TEXT,
        PRIMARY KEY (project_id, resolution, at, instance_id)
    ) WITHOUT ROWID;
    CREATE INDEX metric_instance_points_by_age ON metric_instance_points(resolution, at);
    CREATE TABLE metric_edge_points (
        project_id  TEXT NOT NULL,
        resolution  INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        requests    INTEGER NOT NULL,
        status_1xx  INTEGER NOT NULL,
        status_2xx  INTEGER NOT NULL,
        status_3xx  INTEGER NOT NULL,
        status_4xx  INTEGER NOT NULL,
        status_5xx  INTEGER NOT NULL,
        bytes_in    INTEGER NOT NULL,
        bytes_out   INTEGER NOT NULL,
        latency     TEXT NOT NULL,
        PRIMARY KEY (project_id, resolution, at)
    ) WITHOUT ROWID;
    CREATE INDEX metric_edge_points_by_age ON metric_edge_points(resolution, at);
    CREATE TABLE metric_preview_edge_points (
        preview_id  TEXT NOT NULL,
        project_id  TEXT NOT NULL,
        resolution  INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        requests    INTEGER NOT NULL,
        status_1xx  INTEGER NOT NULL,
        status_2xx  INTEGER NOT NULL,
        status_3xx  INTEGER NOT NULL,
        status_4xx  INTEGER NOT NULL,
        status_5xx  INTEGER NOT NULL,
        bytes_in    INTEGER NOT NULL,
        bytes_out   INTEGER NOT NULL,
        latency     TEXT NOT NULL,
        PRIMARY KEY (preview_id, resolution, at)
    ) WITHOUT ROWID;
    CREATE INDEX metric_preview_edge_points_by_age
        ON metric_preview_edge_points(resolution, at);
    CREATE TABLE imported_from_state (
        state_schema  INTEGER NOT NULL,
        at_ns         INTEGER NOT NULL
    );",
];

/// The logs file's schema version this binary writes.
pub const LATEST: i64 = STEPS.len() as i64;

/// The tables copied from `cantila.db`, with their columns (the same names on both sides).
const MOVED: [(&str, &str); 6] = [
    (
        "runtime_logs",
        "seq, project_id, at_ns, instance, process, stream, line, preview_id, service",
    ),
    ("runtime_log_usage", "project_id, bytes, lines"),
    (
        "runtime_log_cursors",
        "container_id, stream, project_id, last_ns, lines_at_last, updated_ns",
    ),
    (
        "metric_instance_points",
        "project_id, resolution, at, instance_id, cpu_percent, cpu_limit_percent, memory_bytes, \
         memory_limit_bytes, net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes, \
         restarts, preview_id, service",
    ),
    (
        "metric_edge_points",
        "project_id, resolution, at, requests, status_1xx, status_2xx, status_3xx, status_4xx, \
         status_5xx, bytes_in, bytes_out, latency",
    ),
    (
        "metric_preview_edge_points",
        "preview_id, project_id, resolution, at, requests, status_1xx, status_2xx, status_3xx, \
         status_4xx, status_5xx, bytes_in, bytes_out, latency",
    ),
];

impl Store {
    /// Opens (creating if needed) `logs.db` beside this store's `cantila.db`, migrated to
    /// the logs schema, with `cantila.db` attached read-only. Call it on the state store
    /// after `Store::open`, which has copied any older lines into it.
    pub fn open_logs(&self) -> Result<Store, OpenError> {
        open_beside(&self.path)
    }
}

fn open_beside(state_path: &Path) -> Result<Store, OpenError> {
    let path = state_path.with_file_name(FILE);
    let mut connection = connect(&path, state_path)?;
    restrict_to_owner(&path).map_err(|source| OpenError::DataDir {
        path: path.clone(),
        source,
    })?;
    migrate(&mut connection, &path)?;
    Ok(Store {
        db: Arc::new(Mutex::new(Db { connection })),
        path: Arc::new(path),
        attached: Some(Arc::new(state_path.to_owned())),
    })
}

/// A connection to `logs.db` at `path` with the house settings, incremental auto-vacuum
/// (it takes effect on a new file, before its first table), a WAL size limit, and
/// `cantila.db` at `state_path` attached read-only as `state`.
pub(super) fn connect(path: &Path, state_path: &Path) -> Result<Connection, OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(sqlite_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_error)?;
    connection
        .execute_batch(&format!(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))
        .map_err(sqlite_error)?;
    connection
        .execute("ATTACH DATABASE ?1 AS state", [read_only_uri(state_path)])
        .map_err(sqlite_error)?;
    let mut connection = connection;
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(connection)
}

/// `file:` URI of `path` opened read-only; the characters a URI gives a meaning to are
/// escaped, so any data directory path works.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'%' | b'?' | b'#' => uri.push_str(&format!("%{byte:02X}")),
            _ => uri.push(byte as char),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let found: i64 = connection
        .pragma_query_value(Some(rusqlite::DatabaseName::Main), "user_version", |row| {
            row.get(0)
        })
        .map_err(sqlite_error)?;
    if found > LATEST {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            known: LATEST,
        });
    }
    for (index, step) in STEPS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = connection.transaction().map_err(sqlite_error)?;
        tx.execute_batch(step).map_err(sqlite_error)?;
        tx.pragma_update(Some(rusqlite::DatabaseName::Main), "user_version", version)
            .map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
        tracing::info!(version, "migrated logs database schema");
    }
    Ok(())
}

/// Copies the lines and points `cantila.db` (at `state_path`, connected as `state`) still
/// holds into `logs.db` beside it, unless a copy was recorded there already. Run by the
/// state store's migration just before its step 21 drops those tables. Nothing to copy
/// (a fresh installation) creates no file.
pub(super) fn import_from_state(state: &Connection, state_path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: state_path.to_owned(),
        source,
    };
    let any = MOVED
        .iter()
        .map(|(table, _)| format!("EXISTS (SELECT 1 FROM {table})"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let found: bool = state
        .query_row(&format!("SELECT {any}"), [], |row| row.get(0))
        .map_err(sqlite_error)?;
    if !found {
        return Ok(());
    }
    let path = state_path.with_file_name(FILE);
    let mut logs = connect(&path, state_path)?;
    restrict_to_owner(&path).map_err(|source| OpenError::DataDir {
        path: path.clone(),
        source,
    })?;
    migrate(&mut logs, &path)?;
    let logs_error = |source| OpenError::Sqlite {
        path: path.clone(),
        source,
    };
    let state_schema: i64 = state
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite_error)?;
    let tx = logs.transaction().map_err(logs_error)?;
    let done: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM imported_from_state)",
            [],
            |row| row.get(0),
        )
        .map_err(logs_error)?;
    if done {
        tracing::info!("runtime logs and metric points were copied to logs.db before");
        return Ok(());
    }
    let mut copied = 0;
    for (table, columns) in MOVED {
        copied += tx
            .execute(
                &format!(
                    "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM state.{table}"
                ),
                [],
            )
            .map_err(logs_error)?;
    }
    tx.execute(
        "INSERT INTO imported_from_state (state_schema, at_ns) VALUES (?1, ?2)",
        [state_schema, crate::clock::now_nanos()],
    )
    .map_err(logs_error)?;
    tx.commit().map_err(logs_error)?;
    tracing::info!(
        rows = copied,
        "copied runtime logs and metric points to logs.db"
    );
    Ok(())
}

/// The logs file's path beside a `cantila.db`.
pub fn path_beside(state_path: &Path) -> PathBuf {
    state_path.with_file_name(FILE)
}

/// How the file's pages are used: all of them, and those free for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageUse {
    pub pages: i64,
    pub free: i64,
    pub page_size: i64,
}

pub fn page_use(db: &Db) -> Result<PageUse> {
    Ok(db.query_row(
        "SELECT (SELECT page_count FROM pragma_page_count), \
                (SELECT freelist_count FROM pragma_freelist_count), \
                (SELECT page_size FROM pragma_page_size)",
        [],
        |row| {
            Ok(PageUse {
                pages: row.get(0)?,
                free: row.get(1)?,
                page_size: row.get(2)?,
            })
        },
    )?)
}

/// Gives up to `RECLAIM_PAGES` free pages back to the file system (`incremental_vacuum`
/// moves them to the end and cuts the file there, through the WAL); returns the free pages
/// left. Called in a loop, one short write per call.
pub fn reclaim_step(db: &mut Db) -> Result<i64> {
    {
        let mut statement = db.prepare(&format!("PRAGMA incremental_vacuum({RECLAIM_PAGES})"))?;
        // The pragma frees one page per step: stepped to the end, not executed once.
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(page_use(db)?.free)
}

/// Copies the WAL's pages into `logs.db` without waiting for readers (`PASSIVE`); when the
/// whole WAL is copied, the file is cut to the size the last vacuum left. Returns whether
/// every frame was copied.
pub fn checkpoint(db: &Db) -> Result<bool> {
    let (busy, frames, copied): (i64, i64, i64) =
        db.query_row("PRAGMA main.wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    Ok(busy == 0 && frames == copied)
}

/// The projects with lines or points whose project is gone from `cantila.db`, and previews
/// with lines or edge points that are gone; what the sweep removes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    pub projects: Vec<String>,
    /// (project, preview) pairs.
    pub previews: Vec<(String, String)>,
}

/// Finds what belongs to removed projects and previews. Each distinct id is reached through
/// an index one probe at a time (a loose index scan), so the cost grows with the number of
/// projects, not of lines or points.
pub fn orphans(db: &Db) -> Result<Orphans> {
    let distinct = |table: &str, column: &str, condition: &str| {
        format!(
            "WITH RECURSIVE ids(id) AS (
                SELECT (SELECT MIN({column}) FROM main.{table} WHERE {condition})
                UNION ALL
                SELECT (SELECT MIN({column}) FROM main.{table} WHERE {condition} AND {column} > ids.id)
                FROM ids WHERE ids.id IS NOT NULL
             )
             SELECT id FROM ids WHERE id IS NOT NULL"
        )
    };
    let mut projects = std::collections::BTreeSet::new();
    for (table, column, condition) in [
        ("runtime_log_usage", "project_id", "1"),
        ("runtime_logs", "project_id", "1"),
        ("metric_instance_points", "project_id", "1"),
        ("metric_edge_points", "project_id", "1"),
    ] {
        let mut statement = db.prepare_cached(&format!(
            "SELECT o.id FROM ({}) AS o \
             WHERE NOT EXISTS (SELECT 1 FROM state.projects AS p WHERE p.id = o.id)",
            distinct(table, column, condition)
        ))?;
        let found = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        projects.extend(found);
    }
    let mut previews = std::collections::BTreeSet::new();
    for (table, condition) in [
        ("runtime_logs", "preview_id IS NOT NULL"),
        ("metric_preview_edge_points", "1"),
    ] {
        let mut statement = db.prepare_cached(&format!(
            "SELECT o.id, (SELECT t.project_id FROM main.{table} AS t WHERE t.preview_id = o.id LIMIT 1)
             FROM ({}) AS o WHERE NOT EXISTS (SELECT 1 FROM state.previews AS v WHERE v.id = o.id)",
            distinct(table, "preview_id", condition)
        ))?;
        let found = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(1)?, row.get::<_, String>(0)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        previews.extend(found);
    }
    // A removed project's previews go with the project.
    previews.retain(|(project, _)| !projects.contains(project));
    Ok(Orphans {
        projects: projects.into_iter().collect(),
        previews: previews.into_iter().collect(),
    })
}

/// The most lines one sweep transaction deletes.
const SWEEP_CHUNK: i64 = 5_000;

/// Deletes up to `SWEEP_CHUNK` of a removed project's lines, and once none are left its
/// byte count, read positions and metric points; returns how many lines went (0 when the
/// project is gone from this file too).
pub fn sweep_project_step(db: &mut Db, project_id: &str) -> Result<u64> {
    let tx = super::Tx::begin(db)?;
    let deleted = tx.execute(
        &format!(
            "DELETE FROM runtime_logs WHERE seq IN \
             (SELECT seq FROM runtime_logs WHERE project_id = ?1 ORDER BY seq LIMIT {SWEEP_CHUNK})"
        ),
        [project_id],
    )?;
    if deleted == 0 {
        for table in [
            "runtime_log_usage",
            "runtime_log_cursors",
            "metric_instance_points",
            "metric_edge_points",
            "metric_preview_edge_points",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE project_id = ?1"),
                [project_id],
            )?;
        }
    } else {
        // Lines already gone come off the count at once, so the caps read true meanwhile.
        tx.execute(
            "UPDATE runtime_log_usage SET bytes = 0, lines = 0 WHERE project_id = ?1",
            [project_id],
        )?;
    }
    tx.commit()?;
    Ok(deleted as u64)
}

/// Deletes a removed preview's lines (off its project's count) and its points.
pub fn sweep_preview(db: &mut Db, project_id: &str, preview_id: &str) -> Result<()> {
    let tx = super::Tx::begin(db)?;
    super::runtime_logs::delete_preview(&tx, project_id, preview_id)?;
    super::metrics::delete_preview(&tx, project_id, preview_id)?;
    tx.commit()?;
    Ok(())
}

/// Opens a `logs.db` read-only and checks it whole, for restores; its schema version and
/// the latest this binary knows.
pub fn inspect(path: &Path) -> std::result::Result<super::Inspection, Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    Ok(super::Inspection {
        schema_version: super::check_file(&connection)?,
        latest: LATEST,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `cantila.db` as schema 20 left it, with lines, counts, a read position and points
    /// of one project and its preview.
    fn database_at_schema_20(dir: &Path) -> PathBuf {
        let path = dir.join("cantila.db");
        let mut connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        super::super::migrations::migrate_to(&mut connection, 20).unwrap();
        connection
            .execute_batch(
                "INSERT INTO accounts (id, handle, created_at) VALUES ('acc', 'a', 'now');
                 INSERT INTO projects (id, account_id, name, status, created_at, updated_at)
                 VALUES ('prj', 'acc', 'p', 'running', 'now', 'now');
                 INSERT INTO previews (id, project_id, hostname, git_ref, ttl_secs, trigger,
                    created_at, updated_at, expires_at)
                 VALUES ('prv', 'prj', 'b--p-a.test', 'b', 60, 'api', 'now', 'now', 'later');
                 INSERT INTO runtime_logs (seq, project_id, at_ns, instance, process, stream, line, preview_id, service)
                 VALUES (7, 'prj', 1, 'abc', 'web', 'stdout', 'first', NULL, NULL),
                        (8, 'prj', 2, 'edge', 'edge', 'edge', 'GET / 200', 'prv', NULL),
                        (9, 'prj', 3, 'def', 'service', 'stderr', 'from redis', NULL, 'redis');
                 INSERT INTO runtime_log_usage (project_id, bytes, lines) VALUES ('prj', 123, 3);
                 INSERT INTO runtime_log_cursors (container_id, stream, project_id, last_ns, lines_at_last, updated_ns)
                 VALUES ('c1', 'stdout', 'prj', 1, 1, 1);
                 INSERT INTO metric_instance_points (project_id, resolution, at, instance_id,
                    net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes, restarts, preview_id, service)
                 VALUES ('prj', 60, 600, 'abc', 1, 2, 3, 4, 0, NULL, NULL),
                        ('prj', 60, 600, 'def', 1, 2, 3, 4, 0, 'prv', NULL);
                 INSERT INTO metric_edge_points (project_id, resolution, at, requests, status_1xx,
                    status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency)
                 VALUES ('prj', 60, 600, 5, 0, 5, 0, 0, 0, 10, 20, '1,2');
                 INSERT INTO metric_preview_edge_points (preview_id, project_id, resolution, at,
                    requests, status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, bytes_in,
                    bytes_out, latency)
                 VALUES ('prv', 'prj', 60, 600, 1, 0, 1, 0, 0, 0, 1, 2, '1');",
            )
            .unwrap();
        path
    }

    fn counts(logs: &Store) -> Vec<i64> {
        logs.call_blocking(|c| {
            let mut found = Vec::new();
            for (table, _) in MOVED {
                found.push(c.query_row(
                    &format!("SELECT count(*) FROM main.{table}"),
                    [],
                    |row| row.get(0),
                )?);
            }
            Ok(found)
        })
        .unwrap()
    }

    #[test]
    fn migration_21_moves_every_line_and_point_to_logs_db_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_at_schema_20(dir.path());
        // A first start that copied, then stopped before step 21 committed: the copy is
        // recorded, so the next start does not copy again.
        {
            let connection = Connection::open(&path).unwrap();
            import_from_state(&connection, &path).unwrap();
        }
        let state = Store::open(dir.path()).unwrap();
        let logs = state.open_logs().unwrap();
        assert_eq!(counts(&logs), [3, 1, 1, 2, 1, 1]);
        let lines: Vec<(i64, String, Option<String>, Option<String>)> = logs
            .call_blocking(|c| {
                let mut statement = c.prepare(
                    "SELECT seq, line, preview_id, service FROM runtime_logs ORDER BY seq",
                )?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .unwrap();
        assert_eq!(
            lines,
            [
                (7, "first".to_owned(), None, None),
                (8, "GET / 200".to_owned(), Some("prv".to_owned()), None),
                (9, "from redis".to_owned(), None, Some("redis".to_owned())),
            ],
            "sequence numbers (followers' positions) and tags survive"
        );
        // New lines number on from the copied ones.
        let next: i64 = logs
            .call_blocking(|c| {
                c.execute(
                    "INSERT INTO runtime_logs (project_id, at_ns, instance, process, stream, line) \
                     VALUES ('prj', 4, 'abc', 'web', 'stdout', 'new')",
                    [],
                )?;
                Ok(c.last_insert_rowid())
            })
            .unwrap();
        assert_eq!(next, 10);
        // cantila.db no longer has the tables, and is at schema 21.
        let left: i64 = state
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND (name LIKE 'runtime_log%' OR name LIKE 'metric_%')",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(super::super::inspect(&path).unwrap().schema_version, 21);
        // logs.db vacuums incrementally and is owner-only.
        let auto_vacuum: i64 = logs
            .call_blocking(|c| Ok(c.query_row("PRAGMA main.auto_vacuum", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(auto_vacuum, 2, "incremental");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reopening changes nothing.
        drop((logs, state));
        let state = Store::open(dir.path()).unwrap();
        assert_eq!(counts(&state.open_logs().unwrap()), [4, 1, 1, 2, 1, 1]);
    }

    #[test]
    fn a_fresh_installation_copies_nothing_and_its_logs_db_vacuums_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let state = Store::open(dir.path()).unwrap();
        assert!(
            !dir.path().join(FILE).exists(),
            "nothing to copy: no file yet"
        );
        let logs = state.open_logs().unwrap();
        assert_eq!(counts(&logs), [0; 6]);
        let auto_vacuum: i64 = logs
            .call_blocking(|c| Ok(c.query_row("PRAGMA main.auto_vacuum", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(auto_vacuum, 2);
        // An odd data directory path still attaches cantila.db.
        let odd = dir.path().join("a dir?with#odd%chars");
        let state = Store::open(&odd).unwrap();
        state.open_logs().unwrap();
    }
}
