//! The floor for `scripts/bench/api.sh`: an axum server answering every GET with the same
//! bytes from memory (a page of `GET /v1/projects` saved from the daemon), with the same
//! runtime and content type as `cantila serve`, so the benchmark shows what the API's own
//! work costs beside "one HTTP response of this size from this stack on this machine".
//!
//!   api_floor --listen 127.0.0.1:8081 --body projects.json

use std::net::SocketAddr;

use anyhow::{bail, Context};
use axum::{body::Bytes, http::header, routing::get, Router};

fn main() -> anyhow::Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut body = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().context("--listen")?),
            "--body" => body = Some(std::fs::read(&value).with_context(|| value.clone())?),
            other => bail!("unknown flag {other}; usage: --listen ADDR --body FILE"),
        }
    }
    let (Some(listen), Some(body)) = (listen, body) else {
        bail!("usage: --listen ADDR --body FILE");
    };
    let body = Bytes::from(body);
    let app = Router::new().fallback(get(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    }));
    // The daemon's runtime: multi-threaded, one worker per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}
