//! SQL for metric points: inserting a tick's points, rolling fine points into one-minute
//! points, pruning by age, and reading a project's points since a time. A preview's
//! instance points carry its id (`preview_id`; production's have none) and its edge points
//! live in their own table, `metric_preview_edge_points`.
//! Invariant: a point is only ever written for a project (and preview) that exists (a
//! concurrent delete drops the point, never fails the tick), and every read is scoped to
//! one project id the caller has already authorized and to production or one preview.

use rusqlite::{params, Row};

use crate::{
    error::Result,
    model::metrics::{EdgePoint, InstancePoint},
};

use super::Db;

/// Width of a coarse point, in seconds.
pub const MINUTE: i64 = 60;

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Writes one tick's points at `resolution` seconds; points of deleted projects and
/// previews are skipped.
pub fn insert(
    db: &Db,
    resolution: i64,
    instances: &[InstancePoint],
    edges: &[EdgePoint],
) -> Result<()> {
    let mut instance_statement = db.prepare_cached(
        "INSERT OR REPLACE INTO metric_instance_points (project_id, resolution, at, instance_id,
            cpu_percent, cpu_limit_percent, memory_bytes, memory_limit_bytes, net_rx_bytes,
            net_tx_bytes, block_read_bytes, block_write_bytes, restarts, preview_id, service)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
         WHERE EXISTS (SELECT 1 FROM projects WHERE id = ?1)
           AND (?14 IS NULL OR EXISTS (SELECT 1 FROM previews WHERE id = ?14 AND project_id = ?1))",
    )?;
    for point in instances {
        instance_statement.execute(params![
            point.project_id,
            resolution,
            point.at,
            point.instance_id,
            point.cpu_percent,
            point.cpu_limit_percent,
            point.memory_bytes.map(to_i64),
            point.memory_limit_bytes.map(to_i64),
            to_i64(point.net_rx_bytes),
            to_i64(point.net_tx_bytes),
            to_i64(point.block_read_bytes),
            to_i64(point.block_write_bytes),
            to_i64(point.restarts),
            point.preview_id,
            point.service,
        ])?;
    }
    let mut edge_statement = db.prepare_cached(
        "INSERT OR REPLACE INTO metric_edge_points (project_id, resolution, at, requests,
            status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out,
            latency)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
         WHERE EXISTS (SELECT 1 FROM projects WHERE id = ?1)",
    )?;
    let mut preview_edge_statement = db.prepare_cached(
        "INSERT OR REPLACE INTO metric_preview_edge_points (project_id, resolution, at,
            requests, status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, bytes_in,
            bytes_out, latency, preview_id)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
         WHERE EXISTS (SELECT 1 FROM previews WHERE id = ?13 AND project_id = ?1)",
    )?;
    for point in edges {
        let Some(preview_id) = &point.preview_id else {
            edge_statement.execute(params![
                point.project_id,
                resolution,
                point.at,
                to_i64(point.requests),
                to_i64(point.status[0]),
                to_i64(point.status[1]),
                to_i64(point.status[2]),
                to_i64(point.status[3]),
                to_i64(point.status[4]),
                to_i64(point.bytes_in),
                to_i64(point.bytes_out),
                encode_counts(&point.latency),
            ])?;
            continue;
        };
        preview_edge_statement.execute(params![
            point.project_id,
            resolution,
            point.at,
            to_i64(point.requests),
            to_i64(point.status[0]),
            to_i64(point.status[1]),
            to_i64(point.status[2]),
            to_i64(point.status[3]),
            to_i64(point.status[4]),
            to_i64(point.bytes_in),
            to_i64(point.bytes_out),
            encode_counts(&point.latency),
            preview_id,
        ])?;
    }
    Ok(())
}

/// Rewrites the one-minute points of the minute starting at `minute` from the fine points
/// inside it: gauges averaged, counters summed, histograms added bucket by bucket. Called
/// on every tick, so the current minute's point is always up to date.
pub fn roll_up_minute(db: &Db, fine_resolution: i64, minute: i64) -> Result<()> {
    db.prepare_cached(
        "INSERT OR REPLACE INTO metric_instance_points (project_id, resolution, at,
                instance_id, cpu_percent, cpu_limit_percent, memory_bytes, memory_limit_bytes,
                net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes, restarts,
                preview_id, service)
             SELECT project_id, ?3, ?2, instance_id, AVG(cpu_percent), AVG(cpu_limit_percent),
                CAST(AVG(memory_bytes) AS INTEGER), MAX(memory_limit_bytes), SUM(net_rx_bytes),
                SUM(net_tx_bytes), SUM(block_read_bytes), SUM(block_write_bytes), SUM(restarts),
                preview_id, MAX(service)
             FROM metric_instance_points
             WHERE resolution = ?1 AND at >= ?2 AND at < ?2 + ?3
             GROUP BY project_id, instance_id, preview_id",
    )?
    .execute(params![fine_resolution, minute, MINUTE])?;
    let mut fine = edge_rows(
        db,
        EdgeTable::Projects,
        "WHERE resolution = ?1 AND at >= ?2 AND at < ?2 + 60",
        params![fine_resolution, minute],
    )?;
    fine.extend(edge_rows(
        db,
        EdgeTable::Previews,
        "WHERE resolution = ?1 AND at >= ?2 AND at < ?2 + 60",
        params![fine_resolution, minute],
    )?);
    let mut minutes: Vec<EdgePoint> = Vec::new();
    for point in fine {
        match minutes
            .iter_mut()
            .find(|m| m.project_id == point.project_id && m.preview_id == point.preview_id)
        {
            Some(total) => total.add(&point),
            None => minutes.push(EdgePoint {
                at: minute,
                ..point
            }),
        }
    }
    insert(db, MINUTE, &[], &minutes)
}

/// Deletes fine points older than `fine_before` and one-minute points older than
/// `coarse_before` (Unix seconds).
pub fn prune(db: &Db, fine_resolution: i64, fine_before: i64, coarse_before: i64) -> Result<()> {
    for table in [
        "metric_instance_points",
        "metric_edge_points",
        "metric_preview_edge_points",
    ] {
        db
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE (resolution = ?1 AND at < ?2) OR (resolution = ?3 AND at < ?4)"
            ))?
            .execute(params![fine_resolution, fine_before, MINUTE, coarse_before])?;
    }
    Ok(())
}

/// A project's instance points at `resolution` from `from` (Unix seconds) on, by time:
/// production's instances (`preview_id` `None`) or one preview's.
pub fn instance_points(
    db: &Db,
    project_id: &str,
    preview_id: Option<&str>,
    resolution: i64,
    from: i64,
) -> Result<Vec<InstancePoint>> {
    // `IS` compares NULL with NULL as equal, so one statement serves both.
    let mut statement = db.prepare_cached(
        "SELECT project_id, at, instance_id, cpu_percent, cpu_limit_percent, memory_bytes,
            memory_limit_bytes, net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes,
            restarts, preview_id, service
         FROM metric_instance_points
         WHERE project_id = ?1 AND resolution = ?2 AND at >= ?3 AND preview_id IS ?4
         ORDER BY at, instance_id",
    )?;
    let rows = statement
        .query_map(params![project_id, resolution, from, preview_id], |row| {
            Ok(InstancePoint {
                project_id: row.get(0)?,
                at: row.get(1)?,
                instance_id: row.get(2)?,
                cpu_percent: row.get(3)?,
                cpu_limit_percent: row.get(4)?,
                memory_bytes: row.get::<_, Option<i64>>(5)?.map(to_u64),
                memory_limit_bytes: row.get::<_, Option<i64>>(6)?.map(to_u64),
                net_rx_bytes: to_u64(row.get(7)?),
                net_tx_bytes: to_u64(row.get(8)?),
                block_read_bytes: to_u64(row.get(9)?),
                block_write_bytes: to_u64(row.get(10)?),
                restarts: to_u64(row.get(11)?),
                preview_id: row.get(12)?,
                service: row.get(13)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A project's edge points at `resolution` from `from` (Unix seconds) on, by time: its
/// production hostnames' (`preview_id` `None`) or one preview's.
pub fn edge_points(
    db: &Db,
    project_id: &str,
    preview_id: Option<&str>,
    resolution: i64,
    from: i64,
) -> Result<Vec<EdgePoint>> {
    match preview_id {
        None => edge_rows(
            db,
            EdgeTable::Projects,
            "WHERE project_id = ?1 AND resolution = ?2 AND at >= ?3",
            params![project_id, resolution, from],
        ),
        Some(preview_id) => edge_rows(
            db,
            EdgeTable::Previews,
            "WHERE preview_id = ?4 AND project_id = ?1 AND resolution = ?2 AND at >= ?3",
            params![project_id, resolution, from, preview_id],
        ),
    }
}

/// Drops every point of a removed preview, in the caller's transaction (the removal).
pub fn delete_preview(db: &Db, project_id: &str, preview_id: &str) -> Result<()> {
    db.execute(
        "DELETE FROM metric_instance_points WHERE project_id = ?1 AND preview_id = ?2",
        params![project_id, preview_id],
    )?;
    db.execute(
        "DELETE FROM metric_preview_edge_points WHERE preview_id = ?1",
        [preview_id],
    )?;
    Ok(())
}

/// How many points each table holds, for tests and diagnostics.
pub fn point_counts(db: &Db) -> Result<(u64, u64)> {
    Ok(db.query_row(
        "SELECT (SELECT COUNT(*) FROM metric_instance_points),
                (SELECT COUNT(*) FROM metric_edge_points)",
        [],
        |row| Ok((to_u64(row.get(0)?), to_u64(row.get(1)?))),
    )?)
}

/// Where edge points are kept: production's per project, previews' per preview.
#[derive(Debug, Clone, Copy)]
enum EdgeTable {
    Projects,
    Previews,
}

fn edge_rows(
    db: &Db,
    table: EdgeTable,
    filter: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<EdgePoint>> {
    let (table, preview_column) = match table {
        EdgeTable::Projects => ("metric_edge_points", "NULL"),
        EdgeTable::Previews => ("metric_preview_edge_points", "preview_id"),
    };
    let mut statement = db.prepare_cached(&format!(
        "SELECT project_id, at, requests, status_1xx, status_2xx, status_3xx, status_4xx,
            status_5xx, bytes_in, bytes_out, latency, {preview_column}
         FROM {table} {filter} ORDER BY at"
    ))?;
    let rows = statement
        .query_map(values, edge_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn edge_from_row(row: &Row<'_>) -> rusqlite::Result<EdgePoint> {
    let latency: String = row.get(10)?;
    Ok(EdgePoint {
        project_id: row.get(0)?,
        at: row.get(1)?,
        requests: to_u64(row.get(2)?),
        status: [
            to_u64(row.get(3)?),
            to_u64(row.get(4)?),
            to_u64(row.get(5)?),
            to_u64(row.get(6)?),
            to_u64(row.get(7)?),
        ],
        bytes_in: to_u64(row.get(8)?),
        bytes_out: to_u64(row.get(9)?),
        latency: decode_counts(&latency),
        preview_id: row.get(11)?,
    })
}

/// Histogram counts as stored: decimal numbers separated by commas, trailing zeros cut.
fn encode_counts(counts: &[u64]) -> String {
    let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    counts[..used]
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of `encode_counts`; an unreadable count reads as zero rather than losing
/// the whole point.
fn decode_counts(text: &str) -> Vec<u64> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|count| count.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A data directory with one project, its state store, and its `logs.db` (where the
    /// points are).
    fn store_with_project() -> (tempfile::TempDir, Store, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .call_blocking(|c| {
                c.connection.execute_batch(
                    "INSERT INTO accounts (id, handle, created_at) VALUES ('acc_1', 'a', 'now');
                     INSERT INTO projects (id, account_id, name, status, created_at, updated_at)
                     VALUES ('prj_1', 'acc_1', 'web', 'running', 'now', 'now');",
                )?;
                Ok(())
            })
            .unwrap();
        let points = store.open_logs().unwrap();
        (dir, store, points)
    }

    fn instance(at: i64, cpu: Option<f64>, memory: u64, rx: u64) -> InstancePoint {
        InstancePoint {
            project_id: "prj_1".into(),
            instance_id: "abc".into(),
            at,
            cpu_percent: cpu,
            cpu_limit_percent: cpu.map(|c| c * 2.0),
            memory_bytes: Some(memory),
            memory_limit_bytes: Some(1000),
            net_rx_bytes: rx,
            restarts: 0,
            ..InstancePoint::default()
        }
    }

    fn edge(at: i64, requests: u64, latency: Vec<u64>) -> EdgePoint {
        EdgePoint {
            project_id: "prj_1".into(),
            at,
            requests,
            status: [0, requests, 0, 0, 0],
            bytes_out: requests * 10,
            latency,
            ..EdgePoint::default()
        }
    }

    #[test]
    fn fine_points_roll_up_into_their_minute() {
        let (_dir, _state, store) = store_with_project();
        store
            .call_blocking(|c| {
                insert(
                    c,
                    10,
                    &[
                        instance(600, None, 100, 5),
                        instance(610, Some(20.0), 200, 5),
                        instance(650, Some(40.0), 300, 5),
                        instance(660, Some(90.0), 900, 7),
                    ],
                    &[edge(600, 3, vec![1, 2]), edge(650, 2, vec![0, 0, 2])],
                )?;
                roll_up_minute(c, 10, 600)?;
                let minute = instance_points(c, "prj_1", None, MINUTE, 0)?;
                assert_eq!(minute.len(), 1);
                assert_eq!(minute[0].at, 600);
                assert_eq!(
                    minute[0].cpu_percent,
                    Some(30.0),
                    "NULL samples are skipped"
                );
                assert_eq!(minute[0].memory_bytes, Some(200));
                assert_eq!(minute[0].net_rx_bytes, 15);
                let edges = edge_points(c, "prj_1", None, MINUTE, 0)?;
                assert_eq!(edges.len(), 1);
                assert_eq!(
                    (edges[0].requests, edges[0].status[1], edges[0].bytes_out),
                    (5, 5, 50)
                );
                assert_eq!(edges[0].latency, vec![1, 2, 2]);
                // Rolling again after more points replaces the minute, never adds twice.
                insert(c, 10, &[], &[edge(640, 1, vec![1])])?;
                roll_up_minute(c, 10, 600)?;
                let edges = edge_points(c, "prj_1", None, MINUTE, 0)?;
                assert_eq!(edges[0].requests, 6);
                assert_eq!(edges[0].latency, vec![2, 2, 2]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pruning_keeps_each_resolution_for_its_own_retention() {
        let (_dir, _state, store) = store_with_project();
        store
            .call_blocking(|c| {
                insert(
                    c,
                    10,
                    &[instance(100, None, 1, 0), instance(5000, None, 1, 0)],
                    &[],
                )?;
                insert(
                    c,
                    MINUTE,
                    &[instance(60, None, 1, 0), instance(4980, None, 1, 0)],
                    &[edge(60, 1, vec![])],
                )?;
                prune(c, 10, 1000, 120)?;
                assert_eq!(instance_points(c, "prj_1", None, 10, 0)?.len(), 1);
                assert_eq!(instance_points(c, "prj_1", None, MINUTE, 0)?.len(), 1);
                assert_eq!(point_counts(c)?, (2, 0));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn points_of_unknown_projects_are_dropped_and_deleting_a_project_drops_its_points() {
        let (_dir, state, store) = store_with_project();
        store
            .call_blocking(|c| {
                let mut ghost = instance(10, None, 1, 0);
                ghost.project_id = "prj_gone".into();
                insert(
                    c,
                    10,
                    &[ghost, instance(10, None, 1, 0)],
                    &[edge(10, 1, vec![1])],
                )?;
                assert_eq!(point_counts(c)?, (1, 1));
                Ok(())
            })
            .unwrap();
        // Deleting the project (in cantila.db) makes its points orphans, which the sweep
        // deletes.
        state
            .call_blocking(|c| Ok(c.execute("DELETE FROM projects WHERE id = 'prj_1'", [])?))
            .unwrap();
        store
            .call_blocking(|c| {
                let orphans = super::super::logs::orphans(c)?;
                assert_eq!(orphans.projects, ["prj_1"]);
                while super::super::logs::sweep_project_step(c, "prj_1")? > 0 {}
                assert_eq!(point_counts(c)?, (0, 0));
                assert_eq!(super::super::logs::orphans(c)?, Default::default());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_previews_points_are_kept_apart_from_production_and_go_with_it() {
        let (_dir, state, store) = store_with_project();
        state
            .call_blocking(|c| {
                c.connection.execute_batch(
                    "INSERT INTO previews (id, project_id, hostname, git_ref, ttl_secs, trigger,
                        created_at, updated_at, expires_at)
                     VALUES ('prv_1', 'prj_1', 'feature--web-a.test', 'feature', 60, 'api',
                        'now', 'now', 'later');",
                )?;
                Ok(())
            })
            .unwrap();
        store
            .call_blocking(|c| {
                let mut preview_instance = instance(600, Some(50.0), 10, 1);
                preview_instance.instance_id = "def".into();
                preview_instance.preview_id = Some("prv_1".into());
                let mut ghost_instance = preview_instance.clone();
                ghost_instance.instance_id = "ghi".into();
                ghost_instance.preview_id = Some("prv_gone".into());
                let mut preview_edge = edge(600, 4, vec![4]);
                preview_edge.preview_id = Some("prv_1".into());
                let mut ghost_edge = edge(600, 9, vec![9]);
                ghost_edge.preview_id = Some("prv_gone".into());
                insert(
                    c,
                    10,
                    &[
                        instance(600, Some(5.0), 100, 1),
                        preview_instance,
                        ghost_instance,
                    ],
                    &[edge(600, 1, vec![1]), preview_edge, ghost_edge],
                )?;
                roll_up_minute(c, 10, 600)?;
                for resolution in [10, MINUTE] {
                    let production = instance_points(c, "prj_1", None, resolution, 0)?;
                    assert_eq!(production.len(), 1);
                    assert_eq!(production[0].instance_id, "abc");
                    let preview = instance_points(c, "prj_1", Some("prv_1"), resolution, 0)?;
                    assert_eq!(preview.len(), 1);
                    assert_eq!(preview[0].instance_id, "def");
                    assert_eq!(preview[0].preview_id.as_deref(), Some("prv_1"));
                    let edges = edge_points(c, "prj_1", None, resolution, 0)?;
                    assert_eq!(edges.iter().map(|e| e.requests).sum::<u64>(), 1);
                    let edges = edge_points(c, "prj_1", Some("prv_1"), resolution, 0)?;
                    assert_eq!(edges.iter().map(|e| e.requests).sum::<u64>(), 4);
                    assert!(edge_points(c, "prj_1", Some("prv_gone"), resolution, 0)?.is_empty());
                }
                delete_preview(c, "prj_1", "prv_1")?;
                assert!(instance_points(c, "prj_1", Some("prv_1"), 10, 0)?.is_empty());
                assert!(edge_points(c, "prj_1", Some("prv_1"), MINUTE, 0)?.is_empty());
                assert_eq!(instance_points(c, "prj_1", None, 10, 0)?.len(), 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn histogram_counts_round_trip() {
        for counts in [vec![], vec![0, 0, 3], vec![1, 0, 2, 0, 0]] {
            let decoded = decode_counts(&encode_counts(&counts));
            let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
            assert_eq!(decoded, counts[..used]);
        }
    }
}
