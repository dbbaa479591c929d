//! SQL for previews and the project's preview branch patterns. A preview's hostname is
//! unique across all accounts; its rows go with its project.

use rusqlite::{params, OptionalExtension, Row};

use crate::{error::Result, model::preview::Preview};

use super::Db;

const COLUMNS: &str = "id, project_id, hostname, branch, git_ref, pull_request, env, ttl_secs, \
    trigger, created_at, updated_at, expires_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Preview> {
    Ok(Preview {
        id: row.get(0)?,
        project_id: row.get(1)?,
        hostname: row.get(2)?,
        branch: row.get(3)?,
        git_ref: row.get(4)?,
        pull_request: row.get(5)?,
        sealed_env: row.get(6)?,
        ttl_secs: row.get(7)?,
        trigger: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        expires_at: row.get(11)?,
    })
}

fn many(db: &Db, condition: &str, values: impl rusqlite::Params) -> Result<Vec<Preview>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM previews {condition} ORDER BY seq"
    ))?;
    let rows = statement
        .query_map(values, from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn one(db: &Db, condition: &str, values: impl rusqlite::Params) -> Result<Option<Preview>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM previews {condition} ORDER BY seq DESC LIMIT 1"),
            values,
            from_row,
        )
        .optional()?)
}

pub fn insert(db: &Db, preview: &Preview) -> Result<()> {
    db.execute(
        "INSERT INTO previews (id, project_id, hostname, branch, git_ref, pull_request, env, ttl_secs, trigger, created_at, updated_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            preview.id,
            preview.project_id,
            preview.hostname,
            preview.branch,
            preview.git_ref,
            preview.pull_request,
            preview.sealed_env,
            preview.ttl_secs,
            preview.trigger,
            preview.created_at,
            preview.updated_at,
            preview.expires_at
        ],
    )?;
    Ok(())
}

/// Rewrites what a redeploy changes: the ref, the pull request, the env overrides, the
/// TTL and the times.
pub fn update(db: &Db, preview: &Preview) -> Result<()> {
    db.execute(
        "UPDATE previews SET git_ref = ?2, pull_request = ?3, env = ?4, ttl_secs = ?5,
         updated_at = ?6, expires_at = ?7 WHERE id = ?1",
        params![
            preview.id,
            preview.git_ref,
            preview.pull_request,
            preview.sealed_env,
            preview.ttl_secs,
            preview.updated_at,
            preview.expires_at
        ],
    )?;
    Ok(())
}

/// A preview of the project; another project's (so another account's) is `None`.
pub fn by_id(db: &Db, project_id: &str, id: &str) -> Result<Option<Preview>> {
    one(
        db,
        "WHERE project_id = ?1 AND id = ?2",
        params![project_id, id],
    )
}

pub fn of_project(db: &Db, project_id: &str) -> Result<Vec<Preview>> {
    many(db, "WHERE project_id = ?1", [project_id])
}

pub fn count_of_project(db: &Db, project_id: &str) -> Result<u32> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM previews WHERE project_id = ?1",
        [project_id],
        |row| row.get(0),
    )?)
}

pub fn for_pull_request(db: &Db, project_id: &str, number: u32) -> Result<Option<Preview>> {
    one(
        db,
        "WHERE project_id = ?1 AND pull_request = ?2",
        params![project_id, number],
    )
}

pub fn for_branch(db: &Db, project_id: &str, branch: &str) -> Result<Option<Preview>> {
    one(
        db,
        "WHERE project_id = ?1 AND branch = ?2",
        params![project_id, branch],
    )
}

/// A preview of a ref that is not a branch (a tag or a commit), by the ref as asked for.
pub fn for_ref(db: &Db, project_id: &str, git_ref: &str) -> Result<Option<Preview>> {
    one(
        db,
        "WHERE project_id = ?1 AND branch IS NULL AND git_ref = ?2",
        params![project_id, git_ref],
    )
}

/// The first of `candidates` no preview has, asking one at a time; `None` when all are
/// taken. Run inside the transaction that inserts the preview.
pub fn first_free_hostname(
    db: &Db,
    candidates: impl IntoIterator<Item = String>,
) -> Result<Option<String>> {
    for candidate in candidates {
        if !hostname_taken(db, &candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn hostname_taken(db: &Db, hostname: &str) -> Result<bool> {
    Ok(db.query_row(
        "SELECT EXISTS (SELECT 1 FROM previews WHERE hostname = ?1)",
        [hostname],
        |row| row.get(0),
    )?)
}

/// Every preview of every account; for the route table and the reconciler.
pub fn all(db: &Db) -> Result<Vec<Preview>> {
    many(db, "", [])
}

/// Previews whose expiry is at or before `now` (RFC 3339 text compares in time order).
pub fn expired(db: &Db, now: &str) -> Result<Vec<Preview>> {
    many(db, "WHERE expires_at <= ?1", [now])
}

pub fn delete(db: &Db, id: &str) -> Result<bool> {
    Ok(db.execute("DELETE FROM previews WHERE id = ?1", [id])? > 0)
}

/// Sets the branch patterns whose pushes create previews (a JSON array; `None` clears).
pub fn set_branch_patterns(db: &Db, project_id: &str, patterns: Option<&str>) -> Result<()> {
    db.execute(
        "UPDATE projects SET preview_branches = ?2 WHERE id = ?1",
        params![project_id, patterns],
    )?;
    Ok(())
}
