//! The store: the SQLite file holding all desired state (`cantila.db`), and beside it
//! `logs.db` (`logs`: runtime log lines and metric points, with a schema of its own). Sole
//! user of rusqlite.
//! Invariant: every connection runs WAL, `synchronous=FULL` and foreign keys, on a schema
//! migrated to exactly `migrations::LATEST` (`logs::LATEST` for `logs.db`); a newer schema is
//! refused, never "fixed". The one exception is runtime log batches (`runtime_logs`), which
//! commit without an fsync of their own because what a power cut could roll back is read
//! from Docker again.
//! Invariant: no rusqlite type leaves this module. Callers get a `Db` (statements that
//! each commit on their own) or a `Tx` (one write transaction, begun immediate, committed
//! when the work succeeds); every query function takes one of them.

mod migrations;

pub mod accounts;
pub mod aliases;
pub mod app_sqlite;
pub mod audit;
pub mod backups;
pub mod build_secrets;
pub mod copy_summary;
pub mod deploys;
pub mod env;
pub mod git;
pub mod images;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod previews;
pub mod projects;
pub mod registries;
pub mod runs;
pub mod runtime_logs;
pub mod services;
pub mod state_backups;
pub mod volumes;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{
    CachedStatement, Connection, ErrorCode, OpenFlags, Params, Row, Statement, TransactionBehavior,
};

use crate::error::Error;

pub use audit::{Audit, AuditOf};

/// A failure inside SQLite or the file system under it. Opaque outside this module so no
/// rusqlite type leaks; its message is logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] rusqlite::Error);

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::from(StoreError(err))
    }
}

/// A full disk is the operator's to fix and the client's to retry, not a bug: it becomes
/// `Error::StorageFull` (507); every other store failure stays hidden behind a 500.
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        if is_disk_full(&err.0) {
            Error::storage_full()
        } else {
            Error::Store(err.to_string())
        }
    }
}

/// SQLite's unix VFS answers SQLITE_FULL when a write() fails with ENOSPC or EDQUOT.
fn is_disk_full(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::DiskFull)
}

/// Why the store could not be opened. Shown to the operator at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this binary knows ({known}); \
         it was written by a newer Cantila. Run that version, or restore a backup made for this one"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// A cheap-clone handle to the database. One connection behind a mutex: SQLite serialises
/// writers anyway, and every call is short. Calls run on the blocking pool (`call`).
#[derive(Clone)]
pub struct Store {
    db: Arc<Mutex<Db>>,
    /// The database file, so a companion connection can be opened to it.
    path: Arc<PathBuf>,
    /// For `logs.db`: the `cantila.db` its connections attach read-only.
    attached: Option<Arc<PathBuf>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, with owner-only permissions
    /// on the directory and the file, and migrates it to the latest schema.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        create_private_dir(data_dir).map_err(|source| OpenError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("cantila.db");
        let mut connection = connect(&path)?;
        restrict_to_owner(&path).map_err(|source| OpenError::DataDir {
            path: path.clone(),
            source,
        })?;
        migrations::migrate(&mut connection, &path)?;
        Ok(Self {
            db: Arc::new(Mutex::new(Db { connection })),
            path: Arc::new(path),
            attached: None,
        })
    }

    /// A second connection to the same, already migrated, database with a lock of its
    /// own: work queued on one never waits for work queued on the other. SQLite still
    /// admits one writer at a time, but in WAL mode readers run beside it, and writes wait
    /// for each other (`busy_timeout`) for the milliseconds a transaction takes.
    pub fn companion(&self) -> Result<Self, OpenError> {
        let connection = match &self.attached {
            Some(state) => logs::connect(&self.path, state)?,
            None => connect(&self.path)?,
        };
        Ok(Self {
            db: Arc::new(Mutex::new(Db { connection })),
            path: Arc::clone(&self.path),
            attached: self.attached.clone(),
        })
    }

    /// The database file this store opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` with the connection on the blocking pool, so SQLite never stalls the
    /// async threads. Each statement of `work` commits on its own; work that must commit
    /// as a whole uses `write`.
    pub async fn call<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, Error> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.call_blocking(work))
            .await
            .map_err(|join| Error::Internal(format!("store task failed: {join}")))?
    }

    /// Runs `work` on the current thread; for the CLI's `admin` commands and start-up.
    pub fn call_blocking<T>(
        &self,
        work: impl FnOnce(&mut Db) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // A poisoned lock means a panic mid-call; SQLite rolled the transaction back, so
        // the connection itself is still sound.
        let mut db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut db)
    }

    /// Runs `work` in one write transaction on the blocking pool: all of it commits when
    /// it returns `Ok`, none of it when it returns `Err` (or panics).
    pub async fn write<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
    {
        self.call(move |db| db.write(work)).await
    }

    /// `write` on the current thread; for the CLI's `admin` commands.
    pub fn write_blocking<T>(
        &self,
        work: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.call_blocking(|db| db.write(work))
    }

    /// A change and its audit entries in one write transaction: `work`, then the entries
    /// `audit` names (given up front, or read from what `work` returns), then the commit.
    /// Every audited mutation goes through here, so the log and the state never disagree.
    pub async fn write_audited<T, A, F>(&self, audit: A, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        A: AuditOf<T> + Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
    {
        self.write(move |tx| audited(tx, audit, work)).await
    }

    /// `write_audited` on the current thread; for the CLI's `admin` commands.
    pub fn write_audited_blocking<T>(
        &self,
        audit: impl AuditOf<T>,
        work: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.write_blocking(|tx| audited(tx, audit, work))
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite finds the file sound, otherwise its
    /// findings, one per line.
    pub fn integrity_check(&self) -> Result<(), Error> {
        let findings = self.call_blocking(|db| {
            let mut statement = db.prepare("PRAGMA integrity_check")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        if findings == ["ok"] {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "integrity check failed: {}",
                findings.join("; ")
            )))
        }
    }

    /// Copies the whole database, as one consistent point in time, into a new file at
    /// `dest` with SQLite's online backup API, and returns the copy's schema version. It
    /// reads on a connection of its own, in one step (one read transaction), so the
    /// daemon's writers keep going meanwhile (WAL) and the copy never restarts. The copy
    /// is switched out of WAL mode (one self-contained file) and integrity-checked.
    pub fn snapshot_to(&self, dest: &Path) -> Result<i64, Error> {
        snapshot_file(&self.path, dest)
    }

    /// `snapshot_to` for the `logs.db` beside this store's file; `None` when there is none
    /// (a data directory the daemon has not started on since the logs store came).
    pub fn snapshot_logs_to(&self, dest: &Path) -> Result<Option<i64>, Error> {
        let path = logs::path_beside(&self.path);
        if !path.exists() {
            return Ok(None);
        }
        snapshot_file(&path, dest).map(Some)
    }

    /// Checkpoints the WAL into the main file so a clean stop leaves one self-contained file.
    pub fn close(&self) {
        let result = self.call_blocking(|db| {
            db.connection
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;")?;
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(error = %err, "closing the store");
        }
    }
}

/// The copy behind `Store::snapshot_to`, of the database file at `path`.
fn snapshot_file(path: &Path, dest: &Path) -> Result<i64, Error> {
    let source = connect(path).map_err(|err| Error::Internal(err.to_string()))?;
    let mut copy = Connection::open(dest)?;
    {
        use rusqlite::backup::{Backup, StepResult};
        let backup = Backup::new(&source, &mut copy)?;
        // -1: every page in one step. A busy or locked step (a checkpoint holding a
        // lock for a moment) is retried for as long as `busy_timeout` would wait.
        let mut retries = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                // `Busy` and `Locked`; the enum is non-exhaustive, so a later kind
                // is treated the same way.
                _ if retries < 100 => {
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(Error::Internal(
                        "the database stayed locked; the snapshot was not taken".to_owned(),
                    ))
                }
            }
        }
    }
    copy.query_row("PRAGMA journal_mode = DELETE", [], |row| {
        row.get::<_, String>(0)
    })?;
    drop(source);
    let checked = check_file(&copy)?;
    restrict_to_owner(dest).map_err(|err| Error::Internal(format!("snapshot: {err}")))?;
    Ok(checked)
}

/// What `inspect` found in a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspection {
    /// Its `user_version`: how many migrations it has.
    pub schema_version: i64,
    /// The schema version this binary migrates to; a file above it is refused by `open`.
    pub latest: i64,
}

/// Opens a database file read-only, without migrating it, and checks it whole
/// (`PRAGMA integrity_check`); for restores, before a file is moved into a data directory.
pub fn inspect(path: &Path) -> Result<Inspection, Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    Ok(Inspection {
        schema_version: check_file(&connection)?,
        latest: migrations::LATEST,
    })
}

/// `PRAGMA integrity_check`, then the schema version.
fn check_file(connection: &Connection) -> Result<i64, Error> {
    let mut statement = connection.prepare("PRAGMA integrity_check")?;
    let findings = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if findings != ["ok"] {
        return Err(Error::Internal(format!(
            "integrity check failed: {}",
            findings.join("; ")
        )));
    }
    Ok(connection.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// `work`, then its audit entries, inside the caller's transaction.
fn audited<T>(
    tx: &Tx<'_>,
    audit: impl AuditOf<T>,
    work: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let outcome = work(tx)?;
    audit::append(tx, audit.entries(&outcome))?;
    Ok(outcome)
}

/// The store's connection, lent to the work of one call. Outside this module it is only
/// handed on to query functions; their SQL runs through the methods below.
pub struct Db {
    connection: Connection,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// `work` in one transaction, committed when it returns `Ok`.
    fn write<T>(&mut self, work: impl FnOnce(&Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let tx = Tx::begin(self)?;
        let outcome = work(&tx)?;
        tx.commit()?;
        Ok(outcome)
    }

    fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.connection.execute(sql, params)
    }

    fn prepare(&self, sql: &str) -> rusqlite::Result<Statement<'_>> {
        self.connection.prepare(sql)
    }

    fn prepare_cached(&self, sql: &str) -> rusqlite::Result<CachedStatement<'_>> {
        self.connection.prepare_cached(sql)
    }

    fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.connection.query_row(sql, params, f)
    }

    fn last_insert_rowid(&self) -> i64 {
        self.connection.last_insert_rowid()
    }
}

/// One write transaction on the store's connection. Every query function takes a `Db`,
/// which this derefs to, so a caller composes several of them into one commit. It begins
/// immediate (see `connect`), commits only through `Store::write` (or a query function
/// that owns its transaction) and rolls back when dropped uncommitted.
pub struct Tx<'db> {
    db: &'db Db,
    transaction: rusqlite::Transaction<'db>,
}

impl<'db> Tx<'db> {
    /// Takes the connection mutably so no transaction is begun inside another.
    fn begin(db: &'db mut Db) -> rusqlite::Result<Self> {
        let db: &'db Db = db;
        let transaction =
            rusqlite::Transaction::new_unchecked(&db.connection, TransactionBehavior::Immediate)?;
        Ok(Self { db, transaction })
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.transaction.commit()
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

/// Opens a connection to the database at `path` with the house settings.
fn connect(path: &Path) -> Result<Connection, OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_error)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(sqlite_error)?;
    // Transactions (`Tx::begin`, and the migrations' own) take the write lock when they
    // begin. A deferred one that read first
    // would fail at once (SQLITE_BUSY_SNAPSHOT) if the companion connection committed in
    // between, where waiting on `busy_timeout` is what is wanted.
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(connection)
}

/// True when `err` is a UNIQUE or PRIMARY KEY violation, for mapping to a 409.
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(failure, _)
        if failure.code == ErrorCode::ConstraintViolation
            && matches!(failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        fs::create_dir_all(path)?;
    }
    restrict_to_owner(path)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_a_sound_self_contained_copy_taken_beside_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .call_blocking(|db| {
                db.execute("CREATE TABLE t (x INTEGER)", [])?;
                db.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(())
            })
            .unwrap();
        // An open write transaction on the daemon's connection does not block the copy,
        // and its uncommitted row is not in it.
        let dest = dir.path().join("copy.db");
        let version = store
            .call_blocking(|db| {
                let tx = Tx::begin(db)?;
                tx.execute("INSERT INTO t VALUES (2)", [])?;
                let version = store.snapshot_to(&dest);
                tx.commit()?;
                version
            })
            .unwrap();
        assert_eq!(version, migrations::LATEST);
        assert!(!dir.path().join("copy.db-wal").exists());
        let inspection = inspect(&dest).unwrap();
        assert_eq!(inspection.schema_version, migrations::LATEST);
        let copy = Connection::open(&dest).unwrap();
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        std::fs::write(dir.path().join("junk.db"), vec![7u8; 4096]).unwrap();
        assert!(inspect(&dir.path().join("junk.db")).is_err());
    }

    #[test]
    fn a_companion_reads_beside_a_writer_and_its_writes_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let companion = store.companion().unwrap();
        store
            .call_blocking(|c| {
                Ok(c.connection
                    .execute_batch("CREATE TABLE scratch (n INTEGER)")?)
            })
            .unwrap();
        let count = |store: &Store| {
            store
                .call_blocking(|c| {
                    Ok(c.query_row("SELECT count(*) FROM scratch", [], |row| {
                        row.get::<_, i64>(0)
                    })?)
                })
                .unwrap()
        };
        let (holding_tx, holding) = std::sync::mpsc::channel();
        let (commit_tx, commit) = std::sync::mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .write_blocking(|tx| {
                        tx.execute("INSERT INTO scratch VALUES (1)", [])?;
                        holding_tx.send(()).unwrap();
                        commit.recv().unwrap();
                        Ok(())
                    })
                    .unwrap();
            })
        };
        holding.recv().unwrap();
        // The writer holds its transaction open: the companion still reads, and sees only
        // what was committed.
        assert_eq!(count(&companion), 0);
        let second_writer = {
            let companion = companion.clone();
            std::thread::spawn(move || {
                companion
                    .write_blocking(|tx| {
                        let seen: i64 =
                            tx.query_row("SELECT count(*) FROM scratch", [], |row| row.get(0))?;
                        tx.execute("INSERT INTO scratch VALUES (?1)", [seen + 1])?;
                        Ok(())
                    })
                    .unwrap();
            })
        };
        commit_tx.send(()).unwrap();
        writer.join().unwrap();
        second_writer.join().unwrap();
        // The companion's transaction began after the first commit (immediate mode), so it
        // read one row and wrote the second, instead of failing on a stale snapshot.
        let rows: Vec<i64> = store
            .call_blocking(|c| {
                let mut statement = c.prepare("SELECT n FROM scratch ORDER BY n")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(rows, [1, 2]);
    }

    #[test]
    fn an_audited_write_commits_its_change_with_its_entries_or_neither() {
        use crate::{
            model::account::{Account, Actor},
            names::Handle,
        };
        let account = |handle: &str| Account {
            id: format!("acc_{handle}"),
            handle: Handle::parse(handle).unwrap(),
            created_at: crate::clock::now(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ada = account("ada");
        let operator = Actor::operator(&ada);
        store
            .write_audited_blocking(Audit::by(&operator, "account.create", &ada.id), |tx| {
                accounts::insert_account(tx, &ada)
            })
            .unwrap();
        // A change that fails after its write leaves neither its rows nor its entry.
        let bob = account("bob");
        let refused =
            store.write_audited_blocking(Audit::by(&operator, "account.create", &bob.id), |tx| {
                accounts::insert_account(tx, &bob)?;
                Err::<(), _>(Error::Conflict("refused after the write".to_owned()))
            });
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
        // Entries read from the outcome are written in order; none is none.
        store
            .write_audited_blocking(
                |count: &i64| {
                    vec![
                        Audit::by(&operator, "accounts.counted", count.to_string()),
                        Audit::by_daemon(&ada.id, "scheduler", "then.this", "t"),
                    ]
                },
                |tx| accounts::count_accounts(tx),
            )
            .unwrap();
        store
            .write_audited_blocking(None::<Audit>, |_| Ok(()))
            .unwrap();
        let (count, entries) = store
            .call_blocking(|db| {
                Ok((
                    accounts::count_accounts(db)?,
                    audit::page(db, &ada.id, None, 10)?,
                ))
            })
            .unwrap();
        assert_eq!(count, 1);
        let described: Vec<(String, String, Option<String>)> = entries
            .into_iter()
            .rev()
            .map(|(_, entry)| (entry.actor, entry.action, entry.target))
            .collect();
        let expected = [
            ("admin-cli", "account.create", ada.id.as_str()),
            ("admin-cli", "accounts.counted", "1"),
            ("scheduler", "then.this", "t"),
        ]
        .map(|(actor, action, target)| {
            (actor.to_owned(), action.to_owned(), Some(target.to_owned()))
        });
        assert_eq!(described, expected);
    }

    #[test]
    fn opens_with_the_house_pragmas_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let store = Store::open(&data_dir).unwrap();
        let (journal, synchronous, foreign_keys): (String, i64, i64) = store
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT journal_mode FROM pragma_journal_mode), \
                            (SELECT synchronous FROM pragma_synchronous), \
                            (SELECT foreign_keys FROM pragma_foreign_keys)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?)
            })
            .unwrap();
        assert_eq!((journal.as_str(), synchronous, foreign_keys), ("wal", 2, 1));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data_dir), 0o700);
            assert_eq!(mode(&data_dir.join("cantila.db")), 0o600);
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let connection = Connection::open(dir.path().join("cantila.db")).unwrap();
        connection
            .pragma_update(None, "user_version", migrations::LATEST + 1)
            .unwrap();
        drop(connection);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn a_full_disk_is_storage_full_and_other_failures_stay_hidden() {
        let failure = |code| {
            Error::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_FULL),
            Error::StorageFull(_)
        ));
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_CORRUPT),
            Error::Store(_)
        ));
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_IOERR),
            Error::Store(_)
        ));
    }

    #[test]
    fn a_fresh_store_passes_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap().integrity_check().unwrap();
    }

    #[test]
    fn reopening_keeps_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open(dir.path()).unwrap();
        let version: i64 = store
            .call_blocking(|c| {
                Ok(c.connection
                    .pragma_query_value(None, "user_version", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(version, migrations::LATEST);
    }
}
