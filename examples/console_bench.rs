//! Time to first render of the console's projects page in headless Chromium, from two
//! origins in one run: the daemon's own console and a peer serving the same files (nginx
//! in `scripts/bench/console.sh`, which proxies `/v1` to the same daemon). Loads alternate
//! between the two; each is timed by the browser's Element Timing of the page heading,
//! which paints together with the list. Cold loads clear the browser cache first; warm
//! loads revalidate (both origins send `Cache-Control: no-cache` with validators).
//!
//!   console_bench --driver http://127.0.0.1:9515 --token sk_live_... --runs 20 \
//!       --console http://127.0.0.1:8080 --peer http://127.0.0.1:8081

use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

struct Args {
    driver: String,
    token: String,
    runs: usize,
    console: String,
    peer: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut driver, mut token, mut runs, mut console, mut peer) = (None, None, 20, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--driver" => driver = Some(value),
            "--token" => token = Some(value),
            "--runs" => runs = value.parse().context("--runs")?,
            "--console" => console = Some(value),
            "--peer" => peer = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(Args {
        driver: driver.context("--driver")?,
        token: token.context("--token")?,
        runs,
        console: console.context("--console")?,
        peer: peer.context("--peer")?,
    })
}

/// chromedriver's pass-through to the DevTools protocol, for clearing the cache.
#[derive(Debug)]
struct Cdp(&'static str);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({ "cmd": self.0, "params": {} }).to_string();
        (axum::http::Method::POST, Some(body))
    }
}

/// Loads `/projects` from `origin` and returns the heading's render time in ms after
/// navigation start.
async fn render_time(client: &Client, origin: &str, cold: bool) -> anyhow::Result<f64> {
    if cold {
        client.issue_cmd(Cdp("Network.clearBrowserCache")).await?;
    }
    client.goto(&format!("{origin}/projects")).await?;
    let shown = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("h1[elementtiming=projects]"))
        .await;
    if shown.is_err() {
        let page = client
            .execute("return document.querySelector('main')?.innerText", vec![])
            .await
            .unwrap_or_default();
        bail!("{origin}/projects never showed its list; the page says: {page}");
    }
    let value = client
        .execute_async(
            r#"const done = arguments[0];
            new PerformanceObserver((list) => {
              const entry = list.getEntries().find((e) => e.identifier === "projects");
              if (entry) done(entry.renderTime || entry.loadTime);
            }).observe({ type: "element", buffered: true });"#,
            vec![],
        )
        .await?;
    value.as_f64().context("no element timing entry")
}

fn summary(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    (median, p90)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let profile = tempfile::tempdir()?;
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.path().display())],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&args.driver)
        .await?;
    // sessionStorage is per origin: sign each one in.
    for origin in [&args.console, &args.peer] {
        client.goto(&format!("{origin}/sign-in")).await?;
        client
            .execute(
                "sessionStorage.setItem('cantila.token', arguments[0])",
                vec![json!(args.token)],
            )
            .await?;
        render_time(&client, origin, false).await?;
    }
    for cold in [true, false] {
        let (mut console, mut peer) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            console.push(render_time(&client, &args.console, cold).await?);
            peer.push(render_time(&client, &args.peer, cold).await?);
        }
        let (console_median, console_p90) = summary(&mut console);
        let (peer_median, peer_p90) = summary(&mut peer);
        let kind = if cold { "cold" } else { "warm" };
        println!(
            "{kind}: console {console_median:.1} ms (p90 {console_p90:.1}), nginx {peer_median:.1} ms (p90 {peer_p90:.1}), ratio console/nginx {:.2}",
            console_median / peer_median
        );
    }
    client.close().await?;
    Ok(())
}
