//! Schema migrations: an ordered list, each applied in its own transaction together with
//! the `user_version` bump, so a crash leaves the database at one version or the next.

use std::path::Path;

use rusqlite::Connection;

use super::OpenError;

/// Step `i` moves the schema from version `i` to `i + 1`. Append only; never edit a step
/// that has shipped.
const STEPS: &[&str] = &[
    // 1: accounts, tokens, projects, audit log.
    "CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        handle      TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name          TEXT,
        scope         TEXT NOT NULL CHECK (scope IN ('read', 'deploy', 'admin')),
        prefix        TEXT NOT NULL,
        secret_hash   BLOB NOT NULL UNIQUE,
        created_at    TEXT NOT NULL,
        last_used_at  TEXT,
        revoked_at    TEXT
    );
    CREATE INDEX tokens_by_account ON tokens(account_id);
    CREATE TABLE projects (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        runtime     TEXT,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE audit_log (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id   TEXT NOT NULL,
        actor        TEXT NOT NULL,
        action       TEXT NOT NULL,
        target       TEXT,
        client_addr  TEXT,
        at           TEXT NOT NULL
    );
    CREATE INDEX audit_by_account ON audit_log(account_id, seq);",
    // 2: git connections, webhook deliveries, deploys and their logs, env vars.
    "CREATE TABLE git_connections (
        project_id            TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
        repo                  TEXT NOT NULL,
        branch                TEXT NOT NULL,
        webhook_secret        BLOB NOT NULL,
        access_token          BLOB,
        created_at            TEXT NOT NULL,
        updated_at            TEXT NOT NULL,
        last_delivery_at      TEXT,
        last_delivery_event   TEXT,
        last_delivery_result  TEXT
    );
    CREATE TABLE webhook_deliveries (
        project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        delivery_id  TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        PRIMARY KEY (project_id, delivery_id)
    );
    CREATE TABLE deploys (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        project_id      TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        status          TEXT NOT NULL,
        trigger         TEXT NOT NULL,
        git_ref         TEXT,
        commit_sha      TEXT,
        commit_message  TEXT,
        plan            TEXT,
        image           TEXT,
        env             BLOB,
        failed_step     TEXT,
        error           TEXT,
        created_at      TEXT NOT NULL,
        building_at     TEXT,
        releasing_at    TEXT,
        finished_at     TEXT
    );
    CREATE INDEX deploys_by_project ON deploys(project_id, seq);
    CREATE INDEX deploys_by_status ON deploys(status);
    CREATE TABLE deploy_logs (
        deploy_id  TEXT NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        at         TEXT NOT NULL,
        kind       TEXT NOT NULL,
        line       TEXT NOT NULL,
        PRIMARY KEY (deploy_id, seq)
    );
    CREATE TABLE env_vars (
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        key         TEXT NOT NULL,
        value       BLOB NOT NULL,
        secret      INTEGER NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (project_id, key)
    );",
    // 3: alias hostnames, unique across all accounts.
    "CREATE TABLE aliases (
        hostname    TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX aliases_by_project ON aliases(project_id);",
    // 4: the desired instance count and size tier of each project.
    "ALTER TABLE projects ADD COLUMN instances INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE projects ADD COLUMN size TEXT;",
    // 5: rollbacks record the deploy they re-release.
    "ALTER TABLE deploys ADD COLUMN rollback_of TEXT;",
    // 6: process types: desired instances of each non-web Procfile process.
    "CREATE TABLE process_scale (
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        process     TEXT NOT NULL,
        instances   INTEGER NOT NULL,
        PRIMARY KEY (project_id, process)
    );",
    // 7 (metrics): per-instance container samples and per-project edge figures, at the
    // fine resolution (`metrics.interval_secs`) and rolled into one-minute points.
    // `resolution` is the point's width in seconds, `at` its start in Unix seconds.
    "CREATE TABLE metric_instance_points (
        project_id          TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
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
        PRIMARY KEY (project_id, resolution, at, instance_id)
    ) WITHOUT ROWID;
    CREATE INDEX metric_instance_points_by_age ON metric_instance_points(resolution, at);
    CREATE TABLE metric_edge_points (
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
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
    CREATE INDEX metric_edge_points_by_age ON metric_edge_points(resolution, at);",
    // 8 (logs): runtime logs: instance output and edge access lines per project, the per-project
    // byte count the size cap reads, and where each container's stream was read up to.
    "CREATE TABLE runtime_logs (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        at_ns       INTEGER NOT NULL,
        instance    TEXT NOT NULL,
        process     TEXT NOT NULL,
        stream      TEXT NOT NULL,
        line        TEXT NOT NULL
    );
    CREATE INDEX runtime_logs_by_project ON runtime_logs(project_id, seq);
    CREATE TABLE runtime_log_usage (
        project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
        bytes       INTEGER NOT NULL,
        lines       INTEGER NOT NULL
    );
    CREATE TABLE runtime_log_cursors (
        container_id  TEXT NOT NULL,
        stream        TEXT NOT NULL,
        project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        last_ns       INTEGER NOT NULL,
        lines_at_last INTEGER NOT NULL,
        updated_ns    INTEGER NOT NULL,
        PRIMARY KEY (container_id, stream)
    );",
    // 9 (data: volumes, databases, backups, assets): persistent volumes, the database
    // wired to a project, backups with their schedules, and the asset index of releases.
    // Volumes and databases do not cascade: a project holding data cannot be deleted
    // until they are deleted explicitly.
    "CREATE TABLE volumes (
        project_id   TEXT NOT NULL REFERENCES projects(id),
        name         TEXT NOT NULL,
        mount_path   TEXT NOT NULL,
        docker_name  TEXT NOT NULL UNIQUE,
        created_at   TEXT NOT NULL,
        PRIMARY KEY (project_id, name),
        UNIQUE (project_id, mount_path)
    );
    CREATE TABLE databases (
        project_id   TEXT PRIMARY KEY REFERENCES projects(id),
        engine       TEXT NOT NULL CHECK (engine IN ('postgres', 'sqlite')),
        host         TEXT,
        port         INTEGER,
        name         TEXT NOT NULL,
        user         TEXT,
        password     BLOB,
        volume       TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE TABLE backups (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL CHECK (kind IN ('database', 'volume')),
        subject      TEXT NOT NULL,
        engine       TEXT,
        trigger      TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
        error        TEXT,
        file         TEXT,
        size_bytes   INTEGER,
        sha256       TEXT,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        restored_at  TEXT
    );
    CREATE INDEX backups_by_project ON backups(project_id, seq);
    CREATE INDEX backups_by_status ON backups(status);
    CREATE TABLE backup_schedules (
        project_id    TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
        schedule      TEXT NOT NULL,
        keep_daily    INTEGER NOT NULL,
        keep_weekly   INTEGER NOT NULL,
        explicit      INTEGER NOT NULL,
        updated_at    TEXT NOT NULL,
        last_run_at   TEXT,
        last_status   TEXT,
        last_error    TEXT
    );
    CREATE TABLE assets (
        deploy_id     TEXT NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
        path          TEXT NOT NULL,
        size_bytes    INTEGER NOT NULL,
        content_type  TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (deploy_id, path)
    );",
    // 10 (previews): preview deployments of branches and pull requests, their deploys
    // (`preview_id` set; production deploys have none, and keep the preview's id after it
    // is removed, as history), and the branch patterns whose pushes create previews. A
    // preview's runtime log lines and instance points carry its id (production's have
    // none); its edge figures have their own table, keyed by the preview.
    "CREATE TABLE previews (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        hostname      TEXT NOT NULL UNIQUE,
        branch        TEXT,
        git_ref       TEXT NOT NULL,
        pull_request  INTEGER,
        env           BLOB,
        ttl_secs      INTEGER NOT NULL,
        trigger       TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        expires_at    TEXT NOT NULL
    );
    CREATE INDEX previews_by_project ON previews(project_id, seq);
    CREATE INDEX previews_by_expiry ON previews(expires_at);
    ALTER TABLE deploys ADD COLUMN preview_id TEXT;
    CREATE INDEX deploys_by_preview ON deploys(preview_id, seq);
    ALTER TABLE projects ADD COLUMN preview_branches TEXT;
    ALTER TABLE runtime_logs ADD COLUMN preview_id TEXT;
    CREATE INDEX runtime_logs_by_preview ON runtime_logs(preview_id, seq)
        WHERE preview_id IS NOT NULL;
    ALTER TABLE metric_instance_points ADD COLUMN preview_id TEXT;
    CREATE TABLE metric_preview_edge_points (
        preview_id  TEXT NOT NULL,
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
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
        ON metric_preview_edge_points(resolution, at);",
    // 11 (s3: backup copies in S3-compatible storage): the remote copy of a completed
    // backup: its object key, whether it is uploaded (verified), pending or failed (and
    // why), and its attempts. NULL status: no copy was asked for (uploads were off).
    "ALTER TABLE backups ADD COLUMN remote_status TEXT
        CHECK (remote_status IN ('pending', 'uploaded', 'failed'));
    ALTER TABLE backups ADD COLUMN remote_key TEXT;
    ALTER TABLE backups ADD COLUMN remote_error TEXT;
    ALTER TABLE backups ADD COLUMN remote_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE backups ADD COLUMN remote_attempted_at TEXT;
    ALTER TABLE backups ADD COLUMN remote_uploaded_at TEXT;
    CREATE INDEX backups_by_remote_status ON backups(remote_status)
        WHERE remote_status IN ('pending', 'failed');",
    // 12 (git: replayed webhooks): the SHA-256 of each verified delivery body, so a replay
    // is recognised whatever delivery id it carries; `subject` is the ref a push named, so
    // a later push to that ref retires the earlier bodies. Both delivery tables are pruned
    // by age (`received_at`).
    "CREATE TABLE webhook_bodies (
        project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        body_sha256  BLOB NOT NULL,
        subject      TEXT,
        received_at  TEXT NOT NULL,
        PRIMARY KEY (project_id, body_sha256)
    );
    CREATE INDEX webhook_bodies_by_age ON webhook_bodies(received_at);
    CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries(received_at);",
    // 13 (img: images as a source): an account's registry credentials (the password or
    // token sealed), a project's image source (one reference; the webhook secret kept only
    // as its SHA-256; the last registry delivery and what came of it), and on each deploy
    // the digest it pulled and an outcome (`unchanged`: the pulled digest was already
    // serving, so nothing was released).
    "CREATE TABLE registry_credentials (
        id          TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        password    BLOB NOT NULL,
        created_at  TEXT NOT NULL,
        UNIQUE (account_id, server)
    );
    CREATE TABLE project_images (
        project_id            TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
        reference             TEXT NOT NULL,
        webhook_secret_sha256 BLOB NOT NULL,
        created_at            TEXT NOT NULL,
        updated_at            TEXT NOT NULL,
        last_delivery_at      TEXT,
        last_delivery_result  TEXT
    );
    ALTER TABLE deploys ADD COLUMN image_digest TEXT;
    ALTER TABLE deploys ADD COLUMN outcome TEXT;",
    // 14 (build: per-project build settings): the API's build settings of a project as
    // JSON (rootDir, dockerfile, target, buildArgs, watchPaths; NULL = none set), and its
    // build secrets, sealed (`secrets::SecretBox`) like secret env values and never shown
    // after they are set.
    "ALTER TABLE projects ADD COLUMN build_settings TEXT;
    CREATE TABLE build_secrets (
        project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        value       BLOB NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (project_id, name)
    );",
    // 15 (health: health check settings): a project's health check settings as the JSON
    // object the API takes (`healthCheck`); NULL means the defaults.
    "ALTER TABLE projects ADD COLUMN health_check TEXT;",
    // 16 (runs: one-off runs): each run of a command in a container of a release's image
    // (the command as a JSON array; the env given with it is never stored), who or which
    // job started it, its size, timeout, status, exit code and times; and the lines it
    // wrote, numbered per run and capped (`output_bytes` is what the kept lines weigh).
    // Finished runs beyond `runs.history_per_project` are pruned with their lines.
    "CREATE TABLE runs (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        account_id    TEXT NOT NULL,
        project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        deploy_id     TEXT NOT NULL,
        command       TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN
            ('pending', 'running', 'succeeded', 'failed', 'canceled', 'timed_out', 'interrupted')),
        exit_code     INTEGER,
        error         TEXT,
        trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'job')),
        job_id        TEXT,
        started_by    TEXT NOT NULL,
        size          TEXT NOT NULL,
        timeout_secs  INTEGER NOT NULL,
        interactive   INTEGER NOT NULL,
        container_id  TEXT,
        output_bytes  INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        duration_ms   INTEGER
    );
    CREATE INDEX runs_by_project ON runs(project_id, seq);
    CREATE INDEX runs_active ON runs(status) WHERE status IN ('pending', 'running');
    CREATE INDEX runs_by_job ON runs(job_id, seq) WHERE job_id IS NOT NULL;
    CREATE TABLE run_output (
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq     INTEGER NOT NULL,
        at      TEXT NOT NULL,
        stream  TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        line    TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
    // 17 (jobs: scheduled jobs): a project's commands run on a schedule (cron, `daily at`,
    // `hourly`, `every N`; an optional IANA time zone), the command as a JSON array, each
    // run's timeout, size and concurrency policy, where the job was declared (`api` or the
    // repository's `cantila.toml`, which releases keep in step with the file), when it
    // fires next (NULL while disabled), its latest firing, and its latest skipped firing
    // with the reason and how many were skipped in all.
    "CREATE TABLE jobs (
        id                TEXT PRIMARY KEY,
        account_id        TEXT NOT NULL,
        project_id        TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name              TEXT NOT NULL,
        schedule          TEXT NOT NULL,
        time_zone         TEXT,
        command           TEXT NOT NULL,
        timeout_secs      INTEGER NOT NULL,
        concurrency       TEXT NOT NULL CHECK (concurrency IN ('forbid', 'allow', 'replace')),
        size              TEXT,
        enabled           INTEGER NOT NULL,
        source            TEXT NOT NULL CHECK (source IN ('api', 'cantila.toml')),
        next_fire_at      TEXT,
        last_fire_at      TEXT,
        last_skip_at      TEXT,
        last_skip_recorded_at TEXT,
        last_skip_reason  TEXT,
        skipped_count     INTEGER NOT NULL DEFAULT 0,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        UNIQUE (project_id, name)
    );
    CREATE INDEX jobs_due ON jobs(next_fire_at) WHERE next_fire_at IS NOT NULL;",
    // 18 (services: containers beside the app): a project's services (an image with its
    // command, entrypoint, env sealed as one JSON map, mounts, health check, restart
    // policy, size, count, port and dependencies; `spec_hash` is what its containers are
    // labelled with). Volumes gain `service`, the service that owns and alone mounts one
    // ('' for the app's volumes); a mount path is unique per owner, so the rebuilt table
    // lets a service mount `/data` beside an app volume at `/data`. Runtime log lines gain
    // the service that wrote them, and instances' metric points the service sampled (NULL
    // for the app's).
    "CREATE TABLE services (
        id             TEXT PRIMARY KEY,
        account_id     TEXT NOT NULL,
        project_id     TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        source         TEXT NOT NULL CHECK (source IN ('api', 'addon', 'compose')),
        image          TEXT NOT NULL,
        addon_engine   TEXT,
        addon_version  TEXT,
        command        TEXT,
        entrypoint     TEXT,
        env            BLOB NOT NULL,
        mounts         TEXT NOT NULL,
        health         TEXT NOT NULL,
        restart        TEXT NOT NULL CHECK (restart IN ('always', 'on-failure', 'no')),
        size           TEXT,
        count          INTEGER NOT NULL CHECK (count BETWEEN 0 AND 10),
        port           INTEGER,
        depends_on     TEXT NOT NULL,
        spec_hash      TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        UNIQUE (project_id, name)
    );
    CREATE TABLE volumes_new (
        project_id   TEXT NOT NULL REFERENCES projects(id),
        name         TEXT NOT NULL,
        mount_path   TEXT NOT NULL,
        docker_name  TEXT NOT NULL UNIQUE,
        created_at   TEXT NOT NULL,
        service      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (project_id, name),
        UNIQUE (project_id, service, mount_path)
    );
    INSERT INTO volumes_new (project_id, name, mount_path, docker_name, created_at)
        SELECT project_id, name, mount_path, docker_name, created_at FROM volumes;
    DROP TABLE volumes;
    ALTER TABLE volumes_new RENAME TO volumes;
    ALTER TABLE runtime_logs ADD COLUMN service TEXT;
    ALTER TABLE metric_instance_points ADD COLUMN service TEXT;",
    // 19 (addons: backups of add-ons): backups gain the kind `service`, an add-on's data
    // dumped with its engine's own tools (subject: the service's name; engine: its
    // engine). SQLite cannot change a CHECK constraint in place, so the table is rebuilt
    // with its rows, sequence numbers and indexes.
    "CREATE TABLE backups_new (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL CHECK (kind IN ('database', 'volume', 'service')),
        subject      TEXT NOT NULL,
        engine       TEXT,
        trigger      TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
        error        TEXT,
        file         TEXT,
        size_bytes   INTEGER,
        sha256       TEXT,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        restored_at  TEXT,
        remote_status TEXT CHECK (remote_status IN ('pending', 'uploaded', 'failed')),
        remote_key   TEXT,
        remote_error TEXT,
        remote_attempts INTEGER NOT NULL DEFAULT 0,
        remote_attempted_at TEXT,
        remote_uploaded_at TEXT
    );
    INSERT INTO backups_new (seq, id, project_id, kind, subject, engine, trigger, status,
            error, file, size_bytes, sha256, started_at, finished_at, restored_at,
            remote_status, remote_key, remote_error, remote_attempts, remote_attempted_at,
            remote_uploaded_at)
        SELECT seq, id, project_id, kind, subject, engine, trigger, status,
            error, file, size_bytes, sha256, started_at, finished_at, restored_at,
            remote_status, remote_key, remote_error, remote_attempts, remote_attempted_at,
            remote_uploaded_at
        FROM backups;
    DROP TABLE backups;
    ALTER TABLE backups_new RENAME TO backups;
    CREATE INDEX backups_by_project ON backups(project_id, seq);
    CREATE INDEX backups_by_status ON backups(status);
    CREATE INDEX backups_by_remote_status ON backups(remote_status)
        WHERE remote_status IN ('pending', 'failed');",
    // 20 (statearchive: backups of Cantila's own state): one row per archive under
    // `<data_dir>/state-backups/`, with its checksum and its copy in S3.
    "CREATE TABLE state_backups (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        created_at    TEXT NOT NULL,
        finished_at   TEXT,
        status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
        error         TEXT,
        trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled')),
        file          TEXT,
        size_bytes    INTEGER,
        sha256        TEXT,
        encrypted     INTEGER NOT NULL DEFAULT 0,
        remote_status TEXT NOT NULL DEFAULT 'none'
            CHECK (remote_status IN ('none', 'pending', 'uploaded', 'failed')),
        remote_key    TEXT,
        remote_error  TEXT
    );
    CREATE INDEX state_backups_by_remote_status ON state_backups(remote_status)
        WHERE remote_status IN ('pending', 'failed');",
    // 21 (logstore: logs and metric points in their own file): runtime log lines, their
    // byte counts and read positions, and metric points move to `logs.db`
    // (`store::logs`). `migrate` copies them there just before this step
    // (`logs::import_from_state`), which then drops them here.
    "DROP TABLE runtime_logs;
    DROP TABLE runtime_log_usage;
    DROP TABLE runtime_log_cursors;
    DROP TABLE metric_instance_points;
    DROP TABLE metric_edge_points;
    DROP TABLE metric_preview_edge_points;",
];

/// The step that drops the tables moved to `logs.db`; their rows are copied there first.
const MOVE_TO_LOGS_STEP: i64 = 21;

/// The schema version this binary writes.
pub const LATEST: i64 = STEPS.len() as i64;

pub(super) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
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
        if version == MOVE_TO_LOGS_STEP {
            super::logs::import_from_state(connection, path)?;
        }
        let tx = connection.transaction().map_err(sqlite_error)?;
        tx.execute_batch(step).map_err(sqlite_error)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
        tracing::info!(version, "migrated database schema");
        if version == MOVE_TO_LOGS_STEP {
            // The dropped tables' pages are free but still in the file: a one-time VACUUM
            // gives them back (it rewrites what is left, the desired state, which is small).
            let free: i64 = connection
                .pragma_query_value(None, "freelist_count", |row| row.get(0))
                .map_err(sqlite_error)?;
            if free > 0 {
                connection.execute_batch("VACUUM").map_err(sqlite_error)?;
            }
        }
    }
    Ok(())
}

/// Brings a database to `version` exactly, as an older binary left it; for tests of later
/// steps on files made by earlier ones.
#[cfg(test)]
pub(super) fn migrate_to(connection: &mut Connection, version: i64) -> rusqlite::Result<()> {
    for (index, step) in STEPS.iter().enumerate().take(version as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
