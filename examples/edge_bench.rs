//! A standalone Cantila edge for `scripts/bench/edge.sh`: one route from a Host to one
//! upstream, served on a given address until SIGINT or SIGTERM, then the edge's own
//! counters for the route are printed. It runs the same `edge::serve_http` as the daemon;
//! only the route table comes from the command line instead of the store.
//!
//!   edge_bench --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --host bench.test

use std::{net::SocketAddr, sync::Arc};

use anyhow::{bail, Context};
use cantila::edge::{
    serve_http, Edge, EdgeConfig, EdgeMetrics, NoChallenges, Route, RouteTable, RouteTarget, Routes,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    host: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut upstream = None;
    let mut host = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().context("--listen")?),
            "--upstream" => upstream = Some(value.parse().context("--upstream")?),
            "--host" => host = Some(value),
            other => {
                bail!("unknown flag {other}; usage: --listen ADDR --upstream ADDR --host HOST")
            }
        }
    }
    Ok(Args {
        listen: listen.context("--listen is required")?,
        upstream: upstream.context("--upstream is required")?,
        host: host.context("--host is required")?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut table = RouteTable::new();
    table.insert(
        &args.host,
        Arc::new(Route::new(
            "prj_bench",
            "bench",
            RouteTarget::Instances(vec![args.upstream]),
            false,
        )),
    );
    let edge = Edge::new(
        Arc::new(Routes::new(table)),
        Arc::new(EdgeMetrics::new()),
        EdgeConfig::default(),
        Arc::new(NoChallenges),
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    serve_http(edge.clone(), listener, async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
    .await;
    let metrics = edge.metrics().snapshot("prj_bench");
    eprintln!("{}", serde_json::to_string(&metrics)?);
    Ok(())
}
