//! Static sites served from their index: a site published by a real deploy carries its
//! index (compressed forms made once), and the edge answers the same with every file in
//! memory or none (`[edge] static_memory_mb = 0`): files past the in-memory size, ranges
//! and compressed forms read from disk, validators, SPA fallback and refusals alike.

use std::{io::Read, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use cantila::edge::{
    serve_http, static_site::index, Edge, EdgeConfig, EdgeMetrics, NoChallenges, Route, RouteTable,
    RouteTarget, Routes,
};
use tokio::{net::TcpListener, sync::oneshot};

use crate::{
    deploys::{events_text, Repo},
    support::TestDaemon,
};

fn write(root: &Path, relative: &str, contents: impl AsRef<[u8]>) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap()
}

/// A site with files on both sides of the in-memory size (1 MiB), compressible and not.
struct Files {
    big_text: String,
    big_blob: Vec<u8>,
    app_js: String,
}

fn site_files(root: &Path) -> Files {
    let app_js = "export const greet = (name) => `hello ${name}`;\n".repeat(100);
    // 1.2 MiB of text: compressed forms, but never in memory.
    let big_text: String = (0..42_000)
        .map(|n| format!("line {n} of a long text file\n"))
        .collect();
    let big_blob: Vec<u8> = (0..1_500_000u32).map(|n| (n % 251) as u8).collect();
    write(root, "index.html", "<h1>home</h1>");
    write(root, "404.html", "<h1>not here</h1>");
    write(root, "about/index.html", "<h1>about</h1>");
    write(root, "assets/app.js", &app_js);
    write(root, "big.txt", &big_text);
    write(root, "big.bin", &big_blob);
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    Files {
        big_text,
        big_blob,
        app_js,
    }
}

struct RunningEdge {
    addr: SocketAddr,
    edge: Edge,
    _stop: oneshot::Sender<()>,
}

async fn serve_site(root: &Path, static_memory: u64) -> RunningEdge {
    let mut table = RouteTable::new();
    for (host, spa_fallback) in [("site.test", false), ("spa.test", true)] {
        let target = RouteTarget::Static {
            root: root.to_owned(),
            spa_fallback,
        };
        table.insert(
            host,
            Arc::new(Route::new("prj_site", "site", target, false)),
        );
    }
    let edge = Edge::new(
        Arc::new(Routes::new(table)),
        Arc::new(EdgeMetrics::new()),
        EdgeConfig::default(),
        Arc::new(NoChallenges),
    )
    .with_static_memory(static_memory);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_http(edge.clone(), listener, async move {
        let _ = stopped.await;
    }));
    RunningEdge {
        addr,
        edge,
        _stop: stop,
    }
}

impl RunningEdge {
    fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        client()
            .get(format!("http://{}{path}", self.addr))
            .header("host", host)
    }
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn unbrotli(bytes: &[u8]) -> String {
    let mut text = String::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Every behaviour of a site, asked of an edge holding `static_memory` bytes of it.
async fn check_site(files: &Files, edge: &RunningEdge) {
    // Whole files, small and past the in-memory size.
    let home = edge.get("site.test", "/").send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert_eq!(home.headers()["cache-control"], "no-cache");
    assert_eq!(home.text().await.unwrap(), "<h1>home</h1>");
    let blob = edge.get("site.test", "/big.bin").send().await.unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.headers()["content-length"], "1500000");
    assert_eq!(blob.headers()["accept-ranges"], "bytes");
    assert_eq!(
        blob.bytes().await.unwrap().as_ref(),
        files.big_blob.as_slice()
    );

    // A range, past the first streamed chunk, and its validators.
    let part = edge
        .get("site.test", "/big.bin")
        .header("range", "bytes=1000000-1199999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        "bytes 1000000-1199999/1500000"
    );
    let etag = part.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &files.big_blob[1_000_000..1_200_000]
    );
    let unchanged = edge
        .get("site.test", "/big.bin")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    let head = client()
        .head(format!("http://{}/big.txt", edge.addr))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"],
        files.big_text.len().to_string().as_str()
    );

    // Compressed forms, each with its own tag, of a small file and a big one.
    for path in ["/assets/app.js", "/big.txt"] {
        let expected = if path == "/big.txt" {
            &files.big_text
        } else {
            &files.app_js
        };
        let gzip = edge
            .get("site.test", path)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gzip.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(gzip.headers()["vary"], "accept-encoding");
        let gzip_tag = gzip.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(gunzip(&gzip.bytes().await.unwrap()), *expected, "{path}");
        let brotli = edge
            .get("site.test", path)
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(brotli.headers()["content-encoding"], "br", "{path}");
        let brotli_tag = brotli.headers()["etag"].to_str().unwrap().to_owned();
        assert_ne!(gzip_tag, brotli_tag);
        assert_eq!(
            unbrotli(&brotli.bytes().await.unwrap()),
            *expected,
            "{path}"
        );
        let revalidated = edge
            .get("site.test", path)
            .header("accept-encoding", "br")
            .header("if-none-match", &brotli_tag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304, "{path}");
    }

    // Directories, the SPA fallback, the site's 404 page and refusals.
    let slashless = edge.get("site.test", "/about?x=1").send().await.unwrap();
    assert_eq!(slashless.status(), 308);
    assert_eq!(slashless.headers()["location"], "/about/?x=1");
    let about = edge.get("site.test", "/about/").send().await.unwrap();
    assert_eq!(about.text().await.unwrap(), "<h1>about</h1>");
    let missing = edge.get("site.test", "/nowhere").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "<h1>not here</h1>");
    let route = edge.get("spa.test", "/app/settings").send().await.unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), "<h1>home</h1>");
    for path in ["/etc/passwd", "/etc"] {
        let refused = edge.get("spa.test", path).send().await.unwrap();
        assert_eq!(refused.status(), 404, "{path}");
        assert_eq!(refused.text().await.unwrap(), "<h1>not here</h1>", "{path}");
    }
    // (The client would resolve a `%2e%2e` segment itself; a hidden separator it sends.)
    let hidden = edge.get("site.test", "/etc%2fpasswd").send().await.unwrap();
    assert_eq!(hidden.status(), 400);
}

#[tokio::test]
async fn a_published_site_is_served_alike_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dep_1");
    let files = site_files(&root);
    let published = index::publish(&root).unwrap();
    assert_eq!(published.files, 6);
    assert_eq!(published.compressed, 2, "app.js and big.txt");

    let in_memory = serve_site(&root, 64 * 1024 * 1024).await;
    check_site(&files, &in_memory).await;
    let held = in_memory.edge.static_files().sites().budget().used();
    assert!(
        held > files.app_js.len() as u64 && held < 1024 * 1024,
        "the small files and their compressed forms are held, not the big ones: {held}"
    );

    let on_disk = serve_site(&root, 0).await;
    check_site(&files, &on_disk).await;
    assert_eq!(on_disk.edge.static_files().sites().budget().used(), 0);
}

#[tokio::test]
async fn a_site_without_an_index_is_indexed_when_first_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dep_1");
    let files = site_files(&root);
    let edge = serve_site(&root, 64 * 1024 * 1024).await;
    // Compressed forms are made in memory when the site loads, for the files that fit;
    // the big text goes as it is.
    let gzip = edge
        .get("site.test", "/assets/app.js")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gunzip(&gzip.bytes().await.unwrap()), files.app_js);
    let big = edge
        .get("site.test", "/big.txt")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(!big.headers().contains_key("content-encoding"));
    assert_eq!(big.text().await.unwrap(), files.big_text);
    assert!(!index::index_dir(&root).exists(), "the edge writes nothing");
}

#[tokio::test]
async fn a_deployed_static_site_is_published_with_its_index() {
    let daemon = TestDaemon::start().await;
    let app_js = "console.log('served from the index');\n".repeat(64);
    let repo = Repo::new(&[
        ("public/index.html", "<h1>indexed</h1>\n"),
        ("public/app.js", &app_js),
    ]);
    let (project_id, _) = daemon.connected_project("indexed", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap();
    let log = events_text(&daemon, deploy_id).await;
    assert!(
        log.contains("indexed the site: 2 files, 1 with gzip and brotli forms"),
        "{log}"
    );
    let site = daemon
        .data_dir()
        .join("sites")
        .join(&project_id)
        .join(deploy_id);
    assert!(index::index_dir(&site).join("manifest.json").is_file());

    let response = client()
        .get(format!("http://{}/app.js", daemon.http))
        .header("host", "indexed.admin.test.local")
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "br");
    assert_eq!(unbrotli(&response.bytes().await.unwrap()), app_js);
    let (status, body) = daemon.edge_get("indexed.admin.test.local", "/").await;
    assert_eq!((status, body.as_str()), (200, "<h1>indexed</h1>\n"));
}

#[tokio::test]
async fn a_site_whose_directory_appears_later_is_served_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dep_1");
    let edge = serve_site(&root, 64 * 1024 * 1024).await;
    let before = edge.get("site.test", "/").send().await.unwrap();
    assert_eq!(before.status(), 404);
    // A release rebuilt after a restore publishes its files where the route points.
    write(&root, "index.html", "<h1>back</h1>");
    let after = edge.get("site.test", "/").send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(after.text().await.unwrap(), "<h1>back</h1>");
}
