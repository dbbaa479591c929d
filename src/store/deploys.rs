//! SQL for deploys and their stored log lines. A deploy belongs to the project's
//! production release (`preview_id` NULL) or to one preview; the project-wide queries
//! below mean production unless their name says otherwise, so a preview's deploys never
//! leak into production's history, rollbacks or release switches.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    clock,
    error::Result,
    model::deploy::{Deploy, DeployStatus, LogLine},
};

use super::{Db, Tx};

const COLUMNS: &str = "seq, id, project_id, status, trigger, git_ref, commit_sha, commit_message, plan, image, failed_step, error, created_at, building_at, releasing_at, finished_at, rollback_of, preview_id, image_digest, outcome";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Deploy)> {
    let status: String = row.get(3)?;
    let plan: Option<String> = row.get(8)?;
    Ok((
        row.get(0)?,
        Deploy {
            id: row.get(1)?,
            project_id: row.get(2)?,
            status: DeployStatus::parse(&status).unwrap_or(DeployStatus::Failed),
            trigger: row.get(4)?,
            git_ref: row.get(5)?,
            commit_sha: row.get(6)?,
            commit_message: row.get(7)?,
            plan: plan.and_then(|text| serde_json::from_str(&text).ok()),
            image: row.get(9)?,
            failed_step: row.get(10)?,
            error: row.get(11)?,
            created_at: row.get(12)?,
            building_at: row.get(13)?,
            releasing_at: row.get(14)?,
            finished_at: row.get(15)?,
            rollback_of: row.get(16)?,
            preview_id: row.get(17)?,
            image_digest: row.get(18)?,
            outcome: row.get(19)?,
        },
    ))
}

pub fn insert(db: &Db, deploy: &Deploy) -> Result<()> {
    db.execute(
        "INSERT INTO deploys (id, project_id, status, trigger, git_ref, created_at, rollback_of, preview_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            deploy.id,
            deploy.project_id,
            deploy.status.as_str(),
            deploy.trigger,
            deploy.git_ref,
            deploy.created_at,
            deploy.rollback_of,
            deploy.preview_id
        ],
    )?;
    Ok(())
}

pub fn by_id(db: &Db, id: &str) -> Result<Option<Deploy>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM deploys WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .map(|(_, deploy)| deploy))
}

/// The project's production deploys, newest first, strictly older than `before` when
/// given.
pub fn page(
    db: &Db,
    project_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, Deploy)>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM deploys WHERE project_id = ?1 AND preview_id IS NULL AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = statement
        .query_map(
            params![project_id, before.unwrap_or(i64::MAX), limit],
            from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn with_status(db: &Db, statuses: &[DeployStatus]) -> Result<Vec<Deploy>> {
    let mut found = Vec::new();
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM deploys WHERE status = ?1 ORDER BY seq"
    ))?;
    for status in statuses {
        let rows = statement
            .query_map([status.as_str()], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        found.extend(rows.into_iter().map(|(_, deploy)| deploy));
    }
    Ok(found)
}

/// The project's production deploys in the given statuses, oldest first.
pub fn of_project_with_status(
    db: &Db,
    project_id: &str,
    statuses: &[DeployStatus],
) -> Result<Vec<Deploy>> {
    of_target_with_status(db, project_id, None, statuses)
}

/// The deploys of one release target (production when `preview_id` is `None`, else that
/// preview) in the given statuses, oldest first.
pub fn of_target_with_status(
    db: &Db,
    project_id: &str,
    preview_id: Option<&str>,
    statuses: &[DeployStatus],
) -> Result<Vec<Deploy>> {
    // `IS` compares NULL with NULL as equal, so one statement serves both targets.
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM deploys WHERE project_id = ?1 AND preview_id IS ?2 AND status = ?3 ORDER BY seq"
    ))?;
    let mut found = Vec::new();
    for status in statuses {
        let rows = statement
            .query_map(params![project_id, preview_id, status.as_str()], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        found.extend(rows);
    }
    found.sort_by_key(|(seq, _)| *seq);
    Ok(found.into_iter().map(|(_, deploy)| deploy).collect())
}

/// Every deploy of the project, production's and its previews', still queued, building
/// or releasing; for deleting the project.
pub fn in_progress_of_project(db: &Db, project_id: &str) -> Result<Vec<Deploy>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM deploys WHERE project_id = ?1 AND status IN ('queued', 'building', 'releasing') ORDER BY seq"
    ))?;
    let rows = statement
        .query_map([project_id], from_row)?
        .map(|row| row.map(|(_, deploy)| deploy))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A preview's deploys, newest first.
pub fn of_preview(db: &Db, preview_id: &str, limit: u32) -> Result<Vec<Deploy>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM deploys WHERE preview_id = ?1 ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = statement
        .query_map(params![preview_id, limit], from_row)?
        .map(|row| row.map(|(_, deploy)| deploy))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The status of each preview's newest deploy, by preview id; for the route table's 503
/// pages.
pub fn newest_status_of_previews(db: &Db) -> Result<Vec<(String, DeployStatus)>> {
    let mut statement = db.prepare_cached(
        "SELECT preview_id, status FROM deploys WHERE seq IN
         (SELECT MAX(seq) FROM deploys WHERE preview_id IS NOT NULL GROUP BY preview_id)",
    )?;
    let rows = statement
        .query_map([], |row| {
            let status: String = row.get(1)?;
            Ok((
                row.get(0)?,
                DeployStatus::parse(&status).unwrap_or(DeployStatus::Failed),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Whether a deploy outside `preview_id` still names `image`, so removing the preview
/// must keep it (production reuses images of the same commit and build inputs).
pub fn image_used_outside_preview(db: &Db, image: &str, preview_id: &str) -> Result<bool> {
    Ok(db.query_row(
        "SELECT EXISTS (SELECT 1 FROM deploys WHERE image = ?1 AND preview_id IS NOT ?2)",
        params![image, preview_id],
        |row| row.get(0),
    )?)
}

pub fn set_status(db: &Db, id: &str, status: DeployStatus, at: &str) -> Result<()> {
    let column = match status {
        DeployStatus::Building => "building_at",
        DeployStatus::Releasing => "releasing_at",
        DeployStatus::Queued => "created_at",
        DeployStatus::Running
        | DeployStatus::Failed
        | DeployStatus::Canceled
        | DeployStatus::Superseded => "finished_at",
    };
    db.execute(
        &format!("UPDATE deploys SET status = ?2, {column} = COALESCE({column}, ?3) WHERE id = ?1"),
        params![id, status.as_str(), at],
    )?;
    Ok(())
}

/// Moves a deploy from `queued` to `to` if it is still queued; false when another party
/// (the worker, a cancel, a newer deploy) got there first.
pub fn claim_queued(db: &Db, id: &str, to: DeployStatus, at: &str) -> Result<bool> {
    let column = match to {
        DeployStatus::Building => "building_at",
        DeployStatus::Queued | DeployStatus::Releasing => "releasing_at",
        DeployStatus::Running
        | DeployStatus::Failed
        | DeployStatus::Canceled
        | DeployStatus::Superseded => "finished_at",
    };
    Ok(db.execute(
        &format!(
            "UPDATE deploys SET status = ?2, {column} = ?3 WHERE id = ?1 AND status = 'queued'"
        ),
        params![id, to.as_str(), at],
    )? > 0)
}

pub fn set_failure(db: &Db, id: &str, step: &str, error: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET failed_step = ?2, error = ?3 WHERE id = ?1",
        params![id, step, error],
    )?;
    Ok(())
}

pub fn set_source(db: &Db, id: &str, sha: &str, message: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET commit_sha = ?2, commit_message = ?3 WHERE id = ?1",
        params![id, sha, message],
    )?;
    Ok(())
}

pub fn set_plan(db: &Db, id: &str, plan: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET plan = ?2 WHERE id = ?1",
        params![id, plan],
    )?;
    Ok(())
}

pub fn set_image(db: &Db, id: &str, image: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET image = ?2 WHERE id = ?1",
        params![id, image],
    )?;
    Ok(())
}

/// Records the digest an image deploy pulled (and pinned).
pub fn set_image_digest(db: &Db, id: &str, digest: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET image_digest = ?2 WHERE id = ?1",
        params![id, digest],
    )?;
    Ok(())
}

/// Records how a deploy ended besides its status (`unchanged`).
pub fn set_outcome(db: &Db, id: &str, outcome: &str) -> Result<()> {
    db.execute(
        "UPDATE deploys SET outcome = ?2 WHERE id = ?1",
        params![id, outcome],
    )?;
    Ok(())
}

pub fn set_env(db: &Db, id: &str, sealed: &[u8]) -> Result<()> {
    db.execute(
        "UPDATE deploys SET env = ?2 WHERE id = ?1",
        params![id, sealed],
    )?;
    Ok(())
}

/// The sealed env snapshot of one deploy, if it has one.
pub fn env_of(db: &Db, deploy_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(db
        .query_row(
            "SELECT env FROM deploys WHERE id = ?1",
            [deploy_id],
            |row| row.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()?
        .flatten())
}

/// The sealed env snapshot of the project's running production deploy, if any.
pub fn running_env(db: &Db, project_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(db
        .query_row(
            "SELECT env FROM deploys WHERE project_id = ?1 AND preview_id IS NULL AND status = 'running' ORDER BY seq DESC LIMIT 1",
            [project_id],
            |row| row.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()?
        .flatten())
}

/// The finished deploys of a commit with an image, newest first, with their stored plans:
/// the candidates whose image a deploy of the same build inputs can reuse.
pub fn reusable_images(
    db: &Db,
    project_id: &str,
    commit_sha: &str,
) -> Result<Vec<(String, Option<String>)>> {
    let mut statement = db.prepare(
        "SELECT image, plan FROM deploys WHERE project_id = ?1 AND commit_sha = ?2
         AND image IS NOT NULL AND status IN ('running', 'superseded') ORDER BY seq DESC",
    )?;
    let rows = statement.query_map(params![project_id, commit_sha], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// A status line superseding a queued deploy (its id, the line), to publish once the
/// transaction commits.
pub type Superseded = Vec<(String, LogLine)>;

/// Queues `deploy` inside the caller's transaction: a deploy still queued for the same
/// target is superseded, the new one is stored with its first log line.
pub fn queue(tx: &Tx<'_>, deploy: &Deploy) -> Result<Superseded> {
    let older = of_target_with_status(
        tx,
        &deploy.project_id,
        deploy.preview_id.as_deref(),
        &[DeployStatus::Queued],
    )?;
    let now = clock::now();
    let mut superseded = Vec::new();
    for old in older {
        set_status(tx, &old.id, DeployStatus::Superseded, &now)?;
        let seq = last_log_seq(tx, &old.id)? + 1;
        let line = LogLine {
            seq,
            at: now.clone(),
            kind: "status".to_owned(),
            text: DeployStatus::Superseded.as_str().to_owned(),
        };
        append_logs(tx, &old.id, std::slice::from_ref(&line))?;
        superseded.push((old.id, line));
    }
    insert(tx, deploy)?;
    let line = LogLine {
        seq: 1,
        at: deploy.created_at.clone(),
        kind: "status".to_owned(),
        text: DeployStatus::Queued.as_str().to_owned(),
    };
    append_logs(tx, &deploy.id, &[line])?;
    Ok(superseded)
}

pub fn append_logs(db: &Db, deploy_id: &str, lines: &[LogLine]) -> Result<()> {
    let mut statement = db.prepare_cached(
        "INSERT INTO deploy_logs (deploy_id, seq, at, kind, line) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for line in lines {
        statement.execute(params![deploy_id, line.seq, line.at, line.kind, line.text])?;
    }
    Ok(())
}

/// Stored lines with `seq` greater than `after`, in order.
pub fn logs_after(db: &Db, deploy_id: &str, after: i64) -> Result<Vec<LogLine>> {
    let mut statement = db.prepare_cached(
        "SELECT seq, at, kind, line FROM deploy_logs WHERE deploy_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let lines = statement
        .query_map(params![deploy_id, after], |row| {
            Ok(LogLine {
                seq: row.get(0)?,
                at: row.get(1)?,
                kind: row.get(2)?,
                text: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines)
}

pub fn last_log_seq(db: &Db, deploy_id: &str) -> Result<i64> {
    Ok(db.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM deploy_logs WHERE deploy_id = ?1",
        [deploy_id],
        |row| row.get(0),
    )?)
}
