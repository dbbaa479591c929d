//! The operator's PostgreSQL server, through tokio-postgres: creating and dropping a
//! project's role and database, and reading their state.
//! Invariant: identifiers and passwords reach SQL only after a charset check (role names
//! `[a-z0-9_]`, passwords base62), so no value can end a quoted string; passwords are
//! never logged or put in an error message.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// How long a connection to the server may take before the operation fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is, as the daemon reaches it (from the admin URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

/// The host and port of the admin URL, which backups and restores connect to as well.
pub fn server_address(admin_url: &str) -> Result<ServerAddress> {
    let config: tokio_postgres::Config = admin_url.parse().map_err(|_| {
        Error::Internal("database.postgres.admin_url does not parse as a postgres URL".to_owned())
    })?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(ServerAddress { host, port })
}

fn unreachable(err: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "the PostgreSQL server is unreachable or refused the operation: {err}; check [database.postgres] admin_url and that the server runs"
    ))
}

async fn connect(url: &str) -> Result<Client> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| Error::Internal("a postgres URL does not parse".to_owned()))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "a PostgreSQL admin connection ended");
        }
    });
    Ok(client)
}

fn check_identifier(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Internal(format!("unsafe SQL identifier {name:?}")))
    }
}

fn check_password(password: &str) -> Result<()> {
    if !password.is_empty() && password.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Error::Internal("unsafe generated password".to_owned()))
    }
}

/// Creates a login role owning a new database of the same name, with least privilege: the
/// role is no superuser and cannot create roles or databases; `CONNECT` and `TEMP` on the
/// database are revoked from PUBLIC, so other roles (other projects) cannot connect.
pub async fn create(admin_url: &str, name: &str, password: &str) -> Result<()> {
    check_identifier(name)?;
    check_password(password)?;
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!(
            "CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{password}'"
        ))
        .await
        .map_err(|err| match err.code() {
            Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {
                Error::Conflict(format!("a role `{name}` exists on the server already"))
            }
            _ => unreachable(err),
        })?;
    // The role keeps INHERIT: it owns the `public` schema through `pg_database_owner`, an
    // implicit membership that grants nothing without inheritance.
    // PostgreSQL 15 lets a CREATEROLE role hand a database to another role only when it is
    // a member of that role; 16 makes the creator a member by itself.
    let steps = [
        format!("GRANT \"{name}\" TO CURRENT_USER"),
        format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
        format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"),
    ];
    for step in &steps {
        if let Err(err) = client.batch_execute(step).await {
            // Leave nothing half-made behind.
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
            let _ = client
                .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
                .await;
            return Err(unreachable(err));
        }
    }
    Ok(())
}

/// What `ensure` found missing on the server and made again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ensured {
    pub role_created: bool,
    pub database_created: bool,
}

/// Makes the role and the database exist as `create` makes them, with `password`: on a
/// new server (a rebuilt machine, a server that lost them) the recorded role and database
/// come back under their recorded names and password, so the sealed credentials the
/// project's containers get still open them. A role that exists gets the password set
/// again (it is the recorded one); a database that exists is left as it is.
pub async fn ensure(admin_url: &str, name: &str, password: &str) -> Result<Ensured> {
    check_identifier(name)?;
    check_password(password)?;
    let client = connect(admin_url).await?;
    let role_exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(unreachable)?
        .is_some();
    let mut ensured = Ensured::default();
    if role_exists {
        client
            .batch_execute(&format!(
                "ALTER ROLE \"{name}\" WITH LOGIN PASSWORD '{password}'"
            ))
            .await
            .map_err(unreachable)?;
    } else {
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{password}'"
            ))
            .await
            .map_err(unreachable)?;
        ensured.role_created = true;
    }
    let database_exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(unreachable)?
        .is_some();
    if !database_exists {
        // As in `create`: membership first, so a CREATEROLE admin may hand the database over.
        for step in [
            format!("GRANT \"{name}\" TO CURRENT_USER"),
            format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
            format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"),
        ] {
            client.batch_execute(&step).await.map_err(unreachable)?;
        }
        ensured.database_created = true;
    }
    Ok(ensured)
}

/// Drops the database (closing its connections) and its role. Missing ones are fine.
pub async fn drop(admin_url: &str, name: &str) -> Result<()> {
    check_identifier(name)?;
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(unreachable)?;
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
        .await
        .map_err(unreachable)?;
    Ok(())
}

/// Whether the database exists, and its size on disk when it does.
pub async fn size(admin_url: &str, name: &str) -> Result<Option<i64>> {
    let client = connect(admin_url).await?;
    let row = client
        .query_opt(
            "SELECT pg_database_size(datname) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(unreachable)?;
    Ok(row.map(|row| row.get::<_, i64>(0)))
}

/// Ends every session of the database (before a restore replaces its objects, so no
/// app transaction holds a lock the restore waits on forever).
pub async fn end_sessions(admin_url: &str, name: &str) -> Result<()> {
    let client = connect(admin_url).await?;
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .map_err(unreachable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_passwords_are_checked_before_sql() {
        assert!(check_identifier("cantila_ab12").is_ok());
        for bad in ["", "a\"b", "A", "a-b", "a b", &"a".repeat(64)] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("aB3").is_ok());
        assert!(check_password("a'b").is_err());
    }

    #[test]
    fn the_server_address_comes_from_the_admin_url() {
        let address = server_address("postgres://admin:pw@db.internal:6543/postgres").unwrap();
        assert_eq!(
            address,
            ServerAddress {
                host: "db.internal".to_owned(),
                port: 6543
            }
        );
        assert_eq!(
            server_address("postgres://a@127.0.0.1/x").unwrap().port,
            5432
        );
    }
}
