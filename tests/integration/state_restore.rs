//! `cantila admin restore` and the first start after it: a restore into a new data
//! directory reproduces every table of the backed-up store row by row (taken under write
//! load), a wrong passphrase or a data directory with state changes nothing, the newest
//! state backup in S3 restores, and the takeover guard refuses to start beside the
//! original installation's containers unless told to take over.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use crate::support::{docker, test_config, BinaryDaemon, TestDaemon, TestDir};

/// Every table of the SQLite file at `path` (all of `sqlite_master`'s tables, SQLite's
/// own `sqlite_sequence` included), each as the set of its rows, each row its columns'
/// values spelled with their storage class so `1` and `'1'` differ.
pub fn tables(path: &Path) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let names: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|name| {
            let mut statement = connection
                .prepare(&format!("SELECT * FROM \"{name}\""))
                .unwrap();
            let width = statement.column_count();
            let rows: BTreeSet<Vec<String>> = statement
                .query_map([], |row| {
                    (0..width)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => "null".to_owned(),
                                rusqlite::types::ValueRef::Integer(n) => format!("int:{n}"),
                                rusqlite::types::ValueRef::Real(x) => format!("real:{x}"),
                                rusqlite::types::ValueRef::Text(t) => {
                                    format!("text:{}", String::from_utf8_lossy(t))
                                }
                                rusqlite::types::ValueRef::Blob(b) => {
                                    format!("blob:{}", hex::encode(b))
                                }
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (name, rows)
        })
        .collect()
}

/// The rows that differ between two table sets, per table: `(only in a, only in b)`.
/// Tables present on one side only count all their rows.
pub fn table_differences(
    a: &BTreeMap<String, BTreeSet<Vec<String>>>,
    b: &BTreeMap<String, BTreeSet<Vec<String>>>,
) -> BTreeMap<String, (Vec<Vec<String>>, Vec<Vec<String>>)> {
    let empty = BTreeSet::new();
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (rows_a, rows_b) = (a.get(name).unwrap_or(&empty), b.get(name).unwrap_or(&empty));
            let only_a: Vec<_> = rows_a.difference(rows_b).cloned().collect();
            let only_b: Vec<_> = rows_b.difference(rows_a).cloned().collect();
            (!only_a.is_empty() || !only_b.is_empty()).then(|| (name.clone(), (only_a, only_b)))
        })
        .collect()
}

#[test]
fn the_table_comparison_sees_a_changed_a_missing_and_an_extra_row() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, rows: &[(i64, &str)]| {
        let path = dir.path().join(name);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, v); CREATE TABLE u (x);")
            .unwrap();
        for (n, v) in rows {
            connection
                .execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![n, v])
                .unwrap();
        }
        path
    };
    let a = tables(&make("a.db", &[(1, "one"), (2, "two"), (3, "three")]));
    let b = tables(&make("b.db", &[(1, "one"), (2, "TWO"), (4, "four")]));
    assert!(table_differences(&a, &a).is_empty());
    let diff = table_differences(&a, &b);
    assert_eq!(diff.keys().collect::<Vec<_>>(), ["t"]);
    let (only_a, only_b) = &diff["t"];
    assert_eq!(only_a.len(), 2, "{only_a:?}");
    assert_eq!(only_b.len(), 2, "{only_b:?}");
    assert!(only_b.contains(&vec!["int:2".to_owned(), "text:TWO".to_owned()]));
}

/// A container labelled with `installation`, as the original server's daemon leaves its
/// instances running; `TestDir`'s drop removes it with the rest of the installation.
fn original_container(installation: &str) -> String {
    docker(
        None,
        &[
            "run",
            "-d",
            "--label",
            &format!("cantila.installation={installation}"),
            "busybox:latest",
            "sleep",
            "600",
        ],
    )
    .expect("start a container of the original installation")
    .trim()
    .to_owned()
}

#[tokio::test]
async fn a_restored_data_dir_refuses_to_start_beside_the_originals_containers_unless_taking_over() {
    let dir = TestDir::new();
    let installation = dir.installation().to_owned();
    let config = test_config(dir.path());
    std::fs::write(
        config.data_dir.join("restored.json"),
        r#"{"archive":"test"}"#,
    )
    .unwrap();
    let container = original_container(&installation);

    // The refusal comes before anything is served; the shutdown future is ready at once,
    // so a daemon that wrongly starts stops again and `run` returns Ok.
    let listeners = cantila::Listeners::ephemeral().await.unwrap();
    let refused = cantila::run(config.clone(), listeners, std::future::ready(()))
        .await
        .expect_err("a restored installation must not start beside its original's containers");
    let message = format!("{refused:#}");
    assert!(
        message.contains("1 container(s) (1 running)")
            && message.contains(&installation)
            && message.contains("--take-over")
            && message.contains("CANTILA_TAKE_OVER=1"),
        "{message}"
    );
    assert!(config.data_dir.join("restored.json").exists());
    assert!(!config.data_dir.join("restored-done.json").exists());

    // The real binary, told to take over through the environment, starts and marks the
    // restore as started; the original's container is still there to be adopted.
    let config_file = dir.path().join("serve.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\napi_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[deploy]\nnetwork = {:?}\n",
            config.data_dir.display().to_string(),
            config.deploy.network
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let daemon = BinaryDaemon::start_from_file_with_env(
        &config_file,
        &config.data_dir,
        &log,
        "info",
        &[("CANTILA_TAKE_OVER", "1")],
    )
    .await;
    let (status, _) = daemon
        .call(reqwest::Method::GET, "/v1/account", serde_json::Value::Null)
        .await;
    assert_eq!(status, 200);
    assert!(!config.data_dir.join("restored.json").exists());
    assert!(config.data_dir.join("restored-done.json").exists());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("taking over the containers of the restored installation"));
    drop(daemon);
    assert!(docker(None, &["inspect", &container]).is_ok());

    // Once started, the marker is gone: later starts are ordinary, containers or not.
    let daemon = TestDaemon::start_in(dir, config).await;
    daemon
        .get("/v1/account", &daemon.admin_token)
        .await
        .expect(200);
}
