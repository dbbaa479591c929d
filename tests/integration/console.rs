//! The web console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against a real daemon, real Docker and real git repos.
//! Screenshots of the main pages go to `<target dir>/console-screenshots/`. A missing
//! Chromium fails these tests; it never skips them (`scripts/test.sh` installs it).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    deploys::{app_answer, cleanup, parse_sse, sign, Repo},
    private_network::PrivateNetwork,
    support::TestDaemon,
};

/// One browser at a time: Chromium is heavy on a 2-core machine shared with the rest of
/// the suite, and the tests are long enough that running them side by side gains nothing.
static BROWSER_TURN: Semaphore = Semaphore::const_new(1);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver and the Chromium it starts, in their own process group so that a failed
/// test still ends every browser process it started.
struct Driver {
    child: std::process::Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on the daemon's console.
pub(crate) struct Browser {
    client: Client,
    base: String,
    _driver: Driver,
    _network: PrivateNetwork,
    _profile: TempDir,
    _turn: SemaphorePermit<'static>,
}

/// `chromedriver` answers `/status` with `ready` once it takes sessions.
async fn driver_ready(port: u16) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
        {
            if let Ok(body) = res.json::<Value>().await {
                if body["value"]["ready"] == true {
                    return true;
                }
            }
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `<target dir>/console-screenshots`: beside the test binary's `debug/` directory, so it
/// follows `CARGO_TARGET_DIR` when set and is the crate's `target/` otherwise.
fn screenshot_dir() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_cantila"));
    let target = binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in <target>/<profile>/");
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    pub(crate) async fn start(daemon: &TestDaemon) -> Self {
        Self::start_on(format!("http://{}", daemon.api), &[]).await
    }

    /// A browser whose pages are under `base`, with extra Chromium flags.
    pub(crate) async fn start_on(base: String, extra_args: &[String]) -> Self {
        let turn = BROWSER_TURN.acquire().await.unwrap();
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the console tests need Debian's chromium and \
                 chromium-driver (scripts/test.sh installs them)"
            );
        }
        let profile = tempfile::tempdir().unwrap();
        // Chromium gets a network namespace of its own in which the page's origin port
        // leads to the daemon (see `private_network` for why).
        let origin_port = url::Url::parse(&base)
            .unwrap()
            .port_or_known_default()
            .expect("the console's origin has a port");
        let (network, child) = PrivateNetwork::start(CHROMEDRIVER, &[origin_port]).await;
        let driver = Driver { child };
        let port = network.driver_address.port();
        assert!(driver_ready(port).await, "chromedriver did not start");

        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,1100".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend_from_slice(extra_args);
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        Self {
            client,
            base,
            _driver: driver,
            _network: network,
            _profile: profile,
            _turn: turn,
        }
    }

    /// The WebDriver session, for what these helpers do not wrap (window size).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    pub(crate) async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The first element matching `css`, waiting up to 60 s for it to appear.
    pub(crate) async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(err) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let text = self
                    .client
                    .find(Locator::Css("body"))
                    .await
                    .ok()
                    .map(|body| async move { body.text().await.unwrap_or_default() });
                let text = match text {
                    Some(text) => text.await,
                    None => String::new(),
                };
                let shot = self.screenshot("failure").await;
                let loaded = self
                    .client
                    .execute(
                        "return [document.readyState, performance.getEntriesByType('resource').map(e => `${e.name} ${Math.round(e.duration)}ms ${e.nextHopProtocol} status=${e.responseStatus} size=${e.transferSize} by=${e.initiatorType}`)]",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                panic!(
                    "no element {css}: {err}; at {url:?} showing '{text}' (see {}); loaded: {loaded}; browser log: {:?}",
                    shot.display(),
                    self.script_errors().await
                )
            }
        }
    }

    /// A button or link by its visible words.
    pub(crate) async fn control(&self, words: &str) -> Element {
        let xpath = format!(
            "//*[(self::button or self::a) and normalize-space()='{words}' and not(ancestor::*[@hidden])]"
        );
        self.client
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|err| panic!("no button or link '{words}': {err}"))
    }

    pub(crate) async fn click(&self, words: &str) {
        self.control(words).await.click().await.unwrap();
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Waits until the text of `css` contains `wanted`; returns the text.
    pub(crate) async fn wait_text(&self, css: &str, wanted: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(wanted) {
                        return text;
                    }
                    last = text;
                }
            }
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let shot = self.screenshot("failure").await;
        panic!(
            "{css} never showed '{wanted}' within {timeout:?}; last text: '{last}' (see {})",
            shot.display()
        );
    }

    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub(crate) async fn sign_in(&self, token: &str) {
        self.goto("/").await;
        let input = self.find("input[name=token]").await;
        // Keyboard only: type the token and press Enter.
        input.send_keys(token).await.unwrap();
        input.send_keys("\u{E007}").await.unwrap();
    }

    /// Browser console errors other than failed requests (which the console shows itself):
    /// script errors and Content-Security-Policy refusals land here. A log that cannot be
    /// read is an error, never an empty log.
    async fn script_errors(&self) -> Result<Vec<String>, String> {
        let logs = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .map_err(|err| format!("chromedriver's log endpoint failed: {err}"))?;
        let entries = logs
            .as_array()
            .ok_or_else(|| format!("chromedriver's log is not a list of entries: {logs}"))?;
        Ok(entries
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .filter(|message| !message.contains("Failed to load resource"))
            .collect())
    }

    pub(crate) async fn close(self) {
        let errors = self.script_errors().await;
        let _ = self.client.clone().close().await;
        let errors = errors.unwrap_or_else(|err| panic!("the browser's log is unreadable: {err}"));
        assert!(errors.is_empty(), "the browser logged errors: {errors:#?}");
    }
}

/// chromedriver's log endpoint (not part of W3C WebDriver, so fantoccini has no method).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_owned()),
        )
    }
}

#[tokio::test]
async fn console_files_are_served_with_strict_headers_and_the_api_is_untouched() {
    let daemon = TestDaemon::start().await;
    let get = |path: &str| daemon.request(Method::GET, path);

    // The console's routes serve its page; scripts and styles only from its own files.
    for path in [
        "/",
        "/sign-in",
        "/projects",
        "/projects/prj_x/deploys/dep_y",
        "/account",
    ] {
        let res = get(path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(directive), "{csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        let body = res.text().await.unwrap();
        assert!(body.contains(r#"<script type="module" src="/assets/js/app.js">"#));
    }

    // Each file with its type, a validator, and gzip when asked for.
    for (path, content_type) in [
        ("/assets/js/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        // The vendored terminal: a module script, its stylesheet and its licence.
        (
            "/assets/vendor/xterm/xterm.mjs",
            "text/javascript; charset=utf-8",
        ),
        (
            "/assets/vendor/xterm/addon-fit.mjs",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/vendor/xterm/xterm.css", "text/css; charset=utf-8"),
        ("/assets/vendor/xterm/LICENSE", "text/plain; charset=utf-8"),
    ] {
        let res = get(path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let plain = res.bytes().await.unwrap();
        let again = get(path)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = get(path)
            .header("if-none-match", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200);
        if plain.len() > 512 {
            // reqwest here decodes nothing, so the bytes are what went over the wire.
            let zipped = get(path)
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(zipped.headers()["content-encoding"], "gzip", "{path}");
            assert_eq!(zipped.headers()["etag"].to_str().unwrap(), etag);
            let wire = zipped.bytes().await.unwrap();
            assert!(wire.len() < plain.len(), "{path} compresses");
            let mut unzipped = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&wire[..]), &mut unzipped)
                .unwrap();
            assert_eq!(unzipped, plain, "{path} decompresses to the file");
        }
    }

    // A path the console does not know: a real 404, with the console's page for people.
    let missing = get("/wp-login.php").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("/assets/js/app.js"));
    assert_eq!(get("/assets/nope.js").send().await.unwrap().status(), 404);
    let post = daemon
        .request(Method::POST, "/projects")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");

    // The API keeps its own JSON 404 under /v1, and the console never answers there.
    let api_missing = daemon.get("/v1/nope", &daemon.admin_token).await;
    assert_eq!(api_missing.status, 404);
    assert_eq!(api_missing.error_code(), "not_found");
    assert_eq!(api_missing.header("x-cantila-route"), Some("none"));
    assert!(api_missing.header("content-security-policy").is_none());
}

/// Sends a signed GitHub `ping` with `secret`; returns the status.
async fn ping_webhook(daemon: &TestDaemon, project_id: &str, secret: &str) -> u16 {
    let body = serde_json::to_vec(&json!({ "zen": "console" })).unwrap();
    daemon
        .request(
            Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header(
            "x-github-delivery",
            format!("console-{}", rand::random::<u64>()),
        )
        .header("x-hub-signature-256", sign(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The deploy id in a build view's path `/projects/<id>/deploys/<deploy>`.
fn deploy_id_of(path: &str) -> String {
    let id = path.rsplit('/').next().unwrap().to_owned();
    assert!(id.starts_with("dep_"), "{path} is not a build view");
    id
}

#[tokio::test]
async fn console_signs_in_creates_connects_deploys_sets_env_scales_and_rolls_back() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::busybox("hello from the console test\n");
    let browser = Browser::start(&daemon).await;
    let long = Duration::from_secs(240);

    // Sign in: the token stays in sessionStorage and never reaches the address bar.
    browser.goto("/").await;
    browser.find("input[name=token]").await;
    assert_eq!(browser.path().await, "/sign-in");
    browser.screenshot("sign-in").await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    let kept = browser
        .js("return sessionStorage.getItem('cantila.token')", vec![])
        .await;
    assert_eq!(kept, daemon.admin_token.as_str());
    assert!(!browser
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains(&daemon.admin_token));
    browser
        .wait_text("[data-testid=who]", "admin token", Duration::from_secs(30))
        .await;

    // Create a project; the console goes on to its git page.
    browser.click("New project").await;
    browser.fill("input[name=name]", "console-e2e").await;
    browser.click("Create project").await;
    browser
        .wait_text("h1", "console-e2e", Duration::from_secs(60))
        .await;
    browser.find("[data-testid=git-form]").await;
    let path = browser.path().await;
    let project_id = path
        .strip_prefix("/projects/")
        .and_then(|rest| rest.strip_suffix("/git"))
        .unwrap_or_else(|| panic!("not a git page: {path}"))
        .to_owned();

    // Connect the fixture repository; the webhook secret is shown once and works.
    browser
        .fill("input[name=repo]", &repo.path().display().to_string())
        .await;
    browser.fill("input[name=branch]", "main").await;
    browser.click("Connect repository").await;
    let secret_input = browser.find("input[data-testid=webhook-secret]").await;
    let secret = secret_input.prop("value").await.unwrap().unwrap();
    assert!(!secret.is_empty());
    let webhook_url = browser
        .find("input[data-testid=webhook-url]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        webhook_url,
        format!("{}/v1/projects/{project_id}/git/webhook", browser.base)
    );
    assert_eq!(ping_webhook(&daemon, &project_id, &secret).await, 200);
    browser.screenshot("git").await;

    // Rotation: a second click confirms; the old secret stops working, the new one works.
    browser.click("Rotate signing secret").await;
    browser.click("Rotate: the old secret stops working").await;
    browser
        .wait_text(
            "[data-testid=webhook-secret-box]",
            "rotated",
            Duration::from_secs(60),
        )
        .await;
    let rotated = browser
        .find("input[data-testid=webhook-secret]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rotated, secret);
    assert_eq!(ping_webhook(&daemon, &project_id, &secret).await, 401);
    assert_eq!(ping_webhook(&daemon, &project_id, &rotated).await, 200);

    // Deploy from the console and watch the live log reach `running`.
    browser
        .find("[data-testid=deploy]")
        .await
        .click()
        .await
        .unwrap();
    browser.find("[data-testid=progress]").await;
    let first_deploy = deploy_id_of(&browser.path().await);
    browser
        .wait_text("[data-testid=deploy-status]", "running", long)
        .await;
    let steps = browser
        .js(
            "return [...document.querySelectorAll('[data-step]')].map(s => s.dataset.state)",
            vec![],
        )
        .await;
    assert_eq!(
        steps,
        json!(["done", "done", "done", "done", "done", "done"])
    );
    let log = browser
        .js("return document.querySelector('ol.log').innerText", vec![])
        .await
        .as_str()
        .unwrap()
        .to_owned();
    for expected in [
        "── queued",
        "fetching",
        "plan: runtime",
        "FROM ",
        "traffic switched",
        "── running",
    ] {
        assert!(
            log.contains(expected),
            "the live log lacks '{expected}':\n{log}"
        );
    }
    assert!(
        browser.count("ol.log .line.step").await > 0,
        "build steps are coloured"
    );
    assert!(browser.count("ol.log .line.status.running").await == 1);
    // The log followed the stream to its end.
    let at_bottom = browser
        .js(
            "const l = document.querySelector('ol.log'); return l.scrollHeight - l.scrollTop - l.clientHeight < 24",
            vec![],
        )
        .await;
    assert_eq!(at_bottom, true);
    browser.screenshot("build").await;
    let api_view = daemon
        .get(&format!("/v1/deploys/{first_deploy}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(api_view["status"], "running");

    // The stream reader, cut mid-stream, resumes with Last-Event-ID: nothing repeats,
    // nothing is lost, against the real events endpoint.
    let resumed = browser
        .client
        .execute_async(
            r#"
            const [deployId, done] = arguments;
            import("/assets/js/sse.js").then(async ({ follow }) => {
              const url = `/v1/deploys/${deployId}/events`;
              const headers = { authorization: `Bearer ${sessionStorage.getItem("cantila.token")}` };
              const asked = [];
              const ids = [];
              await follow({
                connect: async (lastEventId) => {
                  asked.push(lastEventId);
                  const h = lastEventId ? { ...headers, "last-event-id": lastEventId } : headers;
                  const response = await fetch(url, { headers: h });
                  if (asked.length > 1) return response;
                  // The first connection drops after 700 bytes, mid-event.
                  const reader = response.body.getReader();
                  let sent = 0;
                  const cut = new ReadableStream({
                    async pull(controller) {
                      const { value, done: end } = await reader.read();
                      if (end || sent >= 700) { reader.cancel(); controller.close(); return; }
                      const part = value.slice(0, 700 - sent);
                      sent += part.length;
                      controller.enqueue(part);
                    },
                  });
                  return new Response(cut, { status: 200 });
                },
                onEvent: (event) => ids.push([event.type, event.id]),
              });
              done({ asked, ids });
            }).catch((error) => done({ error: String(error) }));
            "#,
            vec![json!(first_deploy)],
        )
        .await
        .unwrap();
    assert!(resumed.get("error").is_none(), "{resumed}");
    let replay = daemon
        .request(Method::GET, &format!("/v1/deploys/{first_deploy}/events"))
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected: Vec<Value> = parse_sse(&replay)
        .into_iter()
        .map(|(kind, id, _)| json!([kind, id.map(|id| id.to_string()).unwrap_or_default()]))
        .collect();
    // `done` carries no id; the reader reports the last one seen, as EventSource does.
    let got: Vec<Value> = resumed["ids"].as_array().unwrap().clone();
    assert_eq!(got.len(), expected.len(), "{resumed}\n{replay}");
    for (got, expected) in got.iter().zip(&expected).filter(|(_, e)| e[0] != "done") {
        assert_eq!(got, expected);
    }
    let asked = resumed["asked"].as_array().unwrap();
    assert_eq!(asked.len(), 2, "one reconnect: {resumed}");
    assert_eq!(asked[0], "");
    assert_ne!(asked[1], "", "the reconnect sent Last-Event-ID");

    // Env: a plain and a secret variable, both marked pending until the next deploy.
    browser.click("Environment").await;
    browser.find("[data-testid=env-form]").await;
    browser.fill("input[name=key]", "GREETING").await;
    browser
        .fill("input[name=value]", "hello from the env editor")
        .await;
    browser.click("Save variable").await;
    browser
        .wait_text(
            "[data-testid=env-list]",
            "GREETING",
            Duration::from_secs(60),
        )
        .await;
    browser.fill("input[name=key]", "API_KEY").await;
    browser.find("#env-secret").await.click().await.unwrap();
    assert_eq!(
        browser
            .find("input[name=value]")
            .await
            .attr("type")
            .await
            .unwrap()
            .as_deref(),
        Some("password")
    );
    browser.fill("input[name=value]", "s3cr3t-value").await;
    browser.click("Save variable").await;
    browser
        .wait_text("[data-testid=env-list]", "API_KEY", Duration::from_secs(60))
        .await;
    assert_eq!(
        browser
            .count("tr[data-key=GREETING][data-pending=true]")
            .await,
        1
    );
    assert_eq!(browser.count("tr[data-key=API_KEY] .masked").await, 1);
    let list_text = browser
        .find("[data-testid=env-list]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !list_text.contains("s3cr3t-value"),
        "the secret is masked: {list_text}"
    );
    browser
        .wait_text(
            "[data-testid=env-pending]",
            "apply on the next deploy",
            Duration::from_secs(30),
        )
        .await;
    browser.screenshot("env").await;
    let env = daemon
        .get(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(env["vars"]["GREETING"], "hello from the env editor");
    assert_eq!(env["pending"], json!(["API_KEY", "GREETING"]));

    // Deploy from the pending banner; the app then sees the variable.
    browser.click("Deploy now").await;
    browser.find("[data-testid=progress]").await;
    let second_deploy = deploy_id_of(&browser.path().await);
    assert_ne!(second_deploy, first_deploy);
    browser
        .wait_text("[data-testid=deploy-status]", "running", long)
        .await;
    let answer = app_answer(&second_deploy, "/env.txt").await;
    assert_eq!(answer.as_deref(), Some("hello from the env editor\n"));

    // Scale to two instances from the overview.
    browser.click("Overview").await;
    let scale = browser.find("[data-testid=scale-form]").await;
    let instances = scale
        .find(Locator::Css("input[name=instances]"))
        .await
        .unwrap();
    instances.clear().await.unwrap();
    instances.send_keys("2").await.unwrap();
    browser.click("Apply").await;
    browser
        .wait_text("[data-testid=scale-current]", "2 instances", long)
        .await;
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["instances"], 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser
        .count("[data-testid=instances] tr[data-instance-state=healthy]")
        .await
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "two healthy instances are listed"
        );
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    browser.screenshot("overview").await;

    // History: the first deploy was superseded; roll back to it from the console.
    browser.click("Deploys").await;
    browser
        .wait_text(
            "[data-testid=deploy-history]",
            &first_deploy,
            Duration::from_secs(60),
        )
        .await;
    browser.screenshot("deploys").await;
    let row = browser
        .find(&format!("tr[data-deploy={first_deploy}]"))
        .await;
    assert_eq!(
        row.attr("data-status").await.unwrap().as_deref(),
        Some("superseded")
    );
    row.find(Locator::Css("[data-testid=rollback]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.click("Roll back to this deploy").await;
    browser.find("[data-testid=progress]").await;
    let rollback = deploy_id_of(&browser.path().await);
    browser
        .wait_text("[data-testid=deploy-status]", "running", long)
        .await;
    let rolled = daemon
        .get(&format!("/v1/deploys/{rollback}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(rolled["rollbackOf"], first_deploy.as_str());

    // Domains: attach an alias; it is listed with its certificate state.
    browser.click("Domains").await;
    browser
        .fill("input[name=hostname]", "www.console-e2e.example")
        .await;
    browser.click("Add alias").await;
    browser
        .wait_text(
            "[data-testid=domain-list]",
            "www.console-e2e.example",
            Duration::from_secs(60),
        )
        .await;
    browser.screenshot("domains").await;

    // The account page: an admin token sees its tokens and the audit log.
    browser.click("Account").await;
    browser
        .wait_text("main", "project.create", Duration::from_secs(60))
        .await;
    browser.screenshot("account").await;

    // The projects list shows the status.
    browser.click("Projects").await;
    browser
        .wait_text(
            "tr[data-project=console-e2e]",
            "running",
            Duration::from_secs(60),
        )
        .await;
    browser.screenshot("projects").await;

    // A phone-sized screen: nothing is wider than the screen, once each page has drawn
    // all it shows (the build page: its whole log).
    browser.client.set_window_size(390, 844).await.unwrap();
    for (path, name, drawn) in [
        (
            "/projects".to_owned(),
            "phone-projects",
            "document.querySelector('tr[data-project=console-e2e]')",
        ),
        (
            format!("/projects/{project_id}"),
            "phone-project",
            "document.querySelector('[data-testid=instances] tr[data-instance]')",
        ),
        (
            format!("/projects/{project_id}/deploys/{rollback}"),
            "phone-build",
            "document.querySelector('[data-testid=connection]')?.dataset.state === 'closed'",
        ),
    ] {
        browser.goto(&path).await;
        browser
            .wait_js(
                &format!("{path} drew its content on a phone-sized screen"),
                &format!("return Boolean(window.innerWidth <= 390 && {drawn})"),
                Duration::from_secs(60),
            )
            .await;
        let overflow = browser
            .js(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await;
        let shot = browser.screenshot(name).await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} scrolls sideways by {overflow} px; see {}",
            shot.display()
        );
    }

    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_live_log_follows_until_the_reader_scrolls_up() {
    let daemon = TestDaemon::start().await;
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    // The real log component in the real page, fed lines the way the stream feeds them.
    let result = browser
        .client
        .execute_async(
            r#"
            const done = arguments[0];
            import("/assets/js/log.js").then(async ({ LiveLog }) => {
              const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
              const log = new LiveLog("test log");
              document.querySelector("main").append(log.node);
              for (let i = 0; i < 200; i++) log.add(`line ${i}`);
              await frame();
              const followed = log.list.scrollHeight - log.list.scrollTop - log.list.clientHeight < 24;
              log.list.scrollTop = 0;
              log.list.dispatchEvent(new Event("scroll"));
              for (let i = 200; i < 260; i++) log.add(`line ${i}`);
              await frame();
              const stayed = log.list.scrollTop;
              const jumpShown = !log.jump.hidden;
              log.jump.click();
              await frame();
              for (let i = 260; i < 300; i++) log.add(i === 299 ? "\u001b[31merror: red\u001b[0m" : `line ${i}`);
              await frame();
              const backAtEnd = log.list.scrollHeight - log.list.scrollTop - log.list.clientHeight < 24;
              const red = log.list.lastElementChild.querySelector(".ansi-fg-red")?.textContent;
              done({ followed, stayed, jumpShown, backAtEnd, red, lines: log.lineCount });
            }).catch((e) => done({ error: String(e) }));
            "#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        result,
        json!({ "followed": true, "stayed": 0, "jumpShown": true, "backAtEnd": true,
                "red": "error: red", "lines": 300 }),
    );
    browser.close().await;
}

#[tokio::test]
async fn console_read_token_sees_no_mutating_controls() {
    let daemon = TestDaemon::start().await;
    // A project with history: a superseded deploy (rollback-able), a connection, env.
    let repo = Repo::busybox("read only\n");
    let (id, _) = daemon.connected_project("read-only-view", &repo).await;
    for _ in 0..2 {
        assert_eq!(daemon.deploy(&id, None).await["status"], "running");
    }
    daemon
        .post(
            &format!("/v1/projects/{id}/env"),
            &daemon.admin_token,
            json!({ "vars": { "VISIBLE": "plain-value", "TOKEN": { "value": "hidden", "secret": true } } }),
        )
        .await
        .expect(200);
    let read = daemon.token("read").await;
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&read).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser
        .wait_text("[data-testid=who]", "read token", Duration::from_secs(30))
        .await;
    browser
        .wait_text(
            "[data-testid=project-list]",
            "read-only-view",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.count("[data-testid=new-project]").await, 0);

    // Each page with what shows that all of it has drawn: sections that load several
    // things draw each when it arrives.
    let text_of = |css: &str, wanted: &str| {
        format!("document.querySelector('{css}')?.textContent.includes('{wanted}')")
    };
    let pages = [
        (
            "",
            "document.querySelector('[data-testid=instances] tr[data-instance]') && document.querySelector('[data-testid=latest-deploy] a')".to_owned(),
        ),
        (
            "/deploys",
            "document.querySelectorAll('[data-testid=deploy-history] tr[data-deploy]').length === 2".to_owned(),
        ),
        (
            "/logs",
            "document.querySelector('[data-testid=logs-connection]')?.dataset.state === 'open'".to_owned(),
        ),
        (
            "/metrics",
            "document.querySelector('[data-testid=metrics-summary] dl') && document.querySelector('[data-testid=metrics-charts] > *')".to_owned(),
        ),
        ("/runs", text_of("[data-testid=run-history]", "No runs yet")),
        ("/jobs", text_of("[data-testid=job-list]", "No jobs yet")),
        ("/console", text_of("main section", "deploy scope")),
        ("/env", text_of("[data-testid=env-list]", "VISIBLE")),
        ("/previews", text_of("[data-testid=preview-list]", "No previews")),
        ("/services", text_of("[data-testid=service-list]", "No services yet")),
        (
            "/data",
            format!(
                "{} && {}",
                text_of("[data-testid=database]", "No database"),
                text_of("[data-testid=volumes]", "No volumes")
            ),
        ),
        (
            "/backups",
            format!(
                "{} && document.querySelector('[data-testid=backup-schedule] dl')",
                text_of("[data-testid=backup-list]", "No backups yet")
            ),
        ),
        (
            "/assets",
            "document.querySelector('[data-testid=asset-list] > *') && document.querySelector('[data-testid=asset-deploy]')?.textContent".to_owned(),
        ),
        (
            "/domains",
            text_of("[data-testid=domain-list]", "read-only-view.admin.test.local"),
        ),
        ("/git", "document.querySelector('[data-testid=git-repo]')".to_owned()),
        ("/image", text_of("[data-testid=image-source]", "No image connected")),
        (
            "/build",
            format!(
                "{} && document.querySelector('[data-testid=build-settings]')",
                text_of("[data-testid=build-secret-list]", "No build secrets")
            ),
        ),
        (
            "/settings",
            format!(
                "{} && {}",
                text_of("main dl.facts", "Created"),
                text_of("[data-testid=health-facts]", "Defaults")
            ),
        ),
    ];
    for (page, drawn) in pages {
        browser.goto(&format!("/projects/{id}{page}")).await;
        // Every part of the section has drawn what it loaded before the check.
        browser
            .wait_js(
                &format!("{page} drew its content"),
                &format!("return Boolean({drawn})"),
                Duration::from_secs(60),
            )
            .await;
        let controls = browser
            .js(
                // Copying a value, jumping to the log's end and filtering what is shown
                // (the `filters` forms of logs, metrics and assets) change nothing.
                "return [...document.querySelectorAll('main form:not(.filters), main button:not(.copy-button):not(.jump), main input:not([readonly]), main select, main textarea')].filter(e => !e.closest('form.filters')).map(e => e.outerHTML.slice(0, 80))",
                vec![],
            )
            .await;
        assert_eq!(controls, json!([]), "{page} shows controls to a read token");
    }
    // Values are masked for read tokens, as the API masks them.
    browser.goto(&format!("/projects/{id}/env")).await;
    let env = browser
        .wait_text("[data-testid=env-list]", "VISIBLE", Duration::from_secs(60))
        .await;
    assert!(
        !env.contains("plain-value") && !env.contains("hidden"),
        "{env}"
    );
    browser.screenshot("read-only-env").await;
    browser.goto(&format!("/projects/{id}/deploys")).await;
    browser
        .wait_text(
            "[data-testid=deploy-history]",
            "superseded",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.count("[data-testid=rollback]").await, 0);
    // The account's registries are listed, with nothing to add or remove.
    browser.goto("/account").await;
    browser
        .wait_text(
            "[data-testid=registry-list]",
            "No registry credentials",
            Duration::from_secs(60),
        )
        .await;
    let controls = browser
        .js(
            "return [...document.querySelectorAll('main form, main button, main input, main select, main textarea')].map(e => e.outerHTML.slice(0, 80))",
            vec![],
        )
        .await;
    assert_eq!(
        controls,
        json!([]),
        "the account page shows controls to a read token"
    );
    browser.goto("/projects/new").await;
    browser
        .wait_text("main [role=alert]", "deploy token", Duration::from_secs(60))
        .await;
    browser.close().await;
    cleanup(&id).await;
}

#[tokio::test]
async fn console_shows_the_api_message_for_a_bad_or_revoked_token() {
    let daemon = TestDaemon::start().await;
    let browser = Browser::start(&daemon).await;
    let wrong = "sk_live_thisTokenDoesNotExist000000000000000";
    let expected = daemon.get("/v1/account", wrong).await;
    assert_eq!(expected.status, 401);
    browser.sign_in(wrong).await;
    let shown = browser
        .wait_text(
            "main [role=alert]",
            expected.error_message(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        shown,
        expected.error_message(),
        "the API's words, as they are"
    );
    assert_eq!(browser.path().await, "/sign-in");
    let kept = browser
        .js("return sessionStorage.getItem('cantila.token')", vec![])
        .await;
    assert_eq!(kept, Value::Null, "a refused token is not kept");
    browser.screenshot("sign-in-refused").await;

    // A token revoked while signed in sends the person back to sign in, saying why.
    let deploy = daemon
        .post(
            "/v1/tokens",
            &daemon.admin_token,
            json!({ "scope": "deploy" }),
        )
        .await
        .expect(201)
        .body;
    browser.sign_in(deploy["token"].as_str().unwrap()).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    daemon
        .delete(
            &format!("/v1/tokens/{}", deploy["id"].as_str().unwrap()),
            &daemon.admin_token,
        )
        .await
        .expect(200);
    browser.click("Account").await;
    browser
        .wait_text(
            "main [role=alert]",
            "stopped working",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.path().await, "/sign-in");
    browser.close().await;
}

/// A project running a Procfile app: `web` serves busybox httpd, `worker` writes a line
/// to stdout and one to stderr every second. Returns the project id.
async fn deploy_chatty_app(daemon: &TestDaemon, name: &str) -> String {
    let mut files = crate::deploys::busybox_app("chatty web\n");
    files.push((
        "Procfile",
        "web: httpd -f -p 8080 -h /www\n\
         worker: i=0; while true; do i=$((i+1)); echo \"tick $i\"; echo \"warn $i\" >&2; sleep 1; done\n"
            .to_owned(),
    ));
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project(name, &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    project_id
}

/// A GET through the daemon's HTTP edge with `host`; returns the status.
async fn edge_get(daemon: &TestDaemon, host: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{}{path}", daemon.http))
        .header("host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

impl Browser {
    /// Waits until `script` (a function body) returns true.
    pub(crate) async fn wait_js(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.js(script, vec![]).await == Value::Bool(true) {
                return;
            }
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let shot = self.screenshot("failure").await;
        panic!("{what}: not within {timeout:?} (see {})", shot.display());
    }

    /// Each shown log line as `[instance, stream, colour class, text]`.
    pub(crate) async fn log_lines(&self) -> Vec<Value> {
        let lines = self
            .js(
                "return [...document.querySelectorAll('ol.log li.line')].map(l => [
                   l.dataset.instance, l.dataset.stream,
                   [...(l.querySelector('.inst')?.classList ?? [])].find(c => c.startsWith('inst-')) ?? '',
                   l.textContent])",
                vec![],
            )
            .await;
        lines.as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test]
async fn console_runtime_logs_follow_live_filter_and_stop_following_when_scrolled_up() {
    let daemon = TestDaemon::start().await;
    let project_id = deploy_chatty_app(&daemon, "chatty").await;
    let host = "chatty.admin.test.local";
    for _ in 0..3 {
        assert_eq!(edge_get(&daemon, host, "/").await, 200);
    }
    let instances = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let worker = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["process"] == "worker")
        .expect("a worker instance")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{project_id}")).await;
    browser.click("Logs").await;
    browser.find("[data-testid=logs-form]").await;

    // Following: the worker's lines and the edge's access lines arrive, each instance
    // with one colour, stderr marked.
    browser
        .wait_text(
            "[data-testid=logs-connection]",
            "Live",
            Duration::from_secs(15),
        )
        .await;
    browser
        .wait_js(
            "the worker's ticks and the edge's lines are shown",
            "const l = [...document.querySelectorAll('ol.log li.line')]; \
             return l.some(x => x.dataset.stream === 'stderr') && l.some(x => x.dataset.instance === 'edge')",
            Duration::from_secs(30),
        )
        .await;
    // A request made now reaches the open page live.
    assert_eq!(edge_get(&daemon, host, "/live-marker-1").await, 404);
    browser
        .wait_text("ol.log", "/live-marker-1", Duration::from_secs(15))
        .await;
    let lines = browser.log_lines().await;
    let colour_of = |instance: &str| -> Vec<String> {
        let mut colours: Vec<String> = lines
            .iter()
            .filter(|l| l[0] == instance)
            .map(|l| l[2].as_str().unwrap().to_owned())
            .collect();
        colours.dedup();
        colours
    };
    let worker_colours = colour_of(&worker);
    assert_eq!(
        worker_colours.len(),
        1,
        "one colour per instance: {lines:?}"
    );
    assert!(worker_colours[0].starts_with("inst-") && worker_colours[0] != "inst-edge");
    assert_eq!(colour_of("edge"), ["inst-edge"]);
    assert!(
        lines.iter().any(|l| l[0] == worker.as_str()
            && l[1] == "stdout"
            && l[3].as_str().unwrap().contains("tick ")),
        "{lines:?}"
    );
    browser.screenshot("logs").await;

    // Scrolling up stops the following; the jump button brings it back.
    browser
        .wait_js(
            "the log overflows its box",
            "const l = document.querySelector('ol.log'); return l.scrollHeight > l.clientHeight + 200",
            Duration::from_secs(60),
        )
        .await;
    let stayed = browser
        .client
        .execute_async(
            r#"
            const done = arguments[0];
            const list = document.querySelector("ol.log");
            const before = list.childElementCount;
            list.scrollTop = 0;
            list.dispatchEvent(new Event("scroll"));
            setTimeout(() => {
              const jump = document.querySelector(".log-box .jump");
              const result = { top: list.scrollTop, grew: list.childElementCount > before, jumpShown: !jump.hidden };
              jump.click();
              requestAnimationFrame(() => setTimeout(() => {
                result.backAtEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
                done(result);
              }, 50));
            }, 2500);
            "#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        stayed,
        json!({ "top": 0, "grew": true, "jumpShown": true, "backAtEnd": true }),
        "new lines kept arriving while the reader stayed where they scrolled"
    );

    // Search and stream: only the worker's stderr lines with the text.
    browser.fill("input[name=q]", "warn").await;
    browser
        .find("select[name=stream] option[value=stderr]")
        .await
        .click()
        .await
        .unwrap();
    browser.click("Show").await;
    browser
        .wait_js(
            "only stderr lines containing the search",
            "const l = [...document.querySelectorAll('ol.log li.line')]; \
             return l.length > 0 && l.every(x => x.dataset.stream === 'stderr' && x.textContent.includes('warn '))",
            Duration::from_secs(15),
        )
        .await;
    let query = browser
        .js(
            "return document.querySelector('ol.log').dataset.query",
            vec![],
        )
        .await;
    assert_eq!(query, "since=1h&q=warn&stream=stderr");

    // An instance: the edge's access lines only; not following, a plain read of the window.
    browser.fill("input[name=q]", "").await;
    browser
        .find("select[name=stream] option[value='']")
        .await
        .click()
        .await
        .unwrap();
    browser
        .find("select[name=instance] option[value=edge]")
        .await
        .click()
        .await
        .unwrap();
    browser.find("#logs-follow").await.click().await.unwrap();
    // "N lines." is the plain read's own summary (the live view says "Live: following new
    // lines." and counts without a full stop), and the read's lines are the edge's.
    browser
        .wait_js(
            "a plain read of the edge's lines",
            "const c = document.querySelector('[data-testid=logs-connection]'); \
             const l = [...document.querySelectorAll('ol.log li.line')]; \
             return /^\\d+ lines?\\./.test(c.textContent) && l.length >= 4 \
               && l.every(x => x.dataset.instance === 'edge')",
            Duration::from_secs(15),
        )
        .await;
    let lines = browser.log_lines().await;
    assert!(
        lines.len() >= 4 && lines.iter().all(|l| l[0] == "edge" && l[1] == "edge"),
        "{lines:?}"
    );
    let read = daemon
        .get(
            &format!("/v1/projects/{project_id}/logs?since=1h&instance=edge"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(lines.len(), read["lines"].as_array().unwrap().len());

    // A bad search is refused by the API, in its words.
    let long = "x".repeat(300);
    browser
        .js(
            "const q = document.querySelector('input[name=q]'); q.removeAttribute('maxlength'); q.value = arguments[0]; return true",
            vec![json!(long)],
        )
        .await;
    browser.click("Show").await;
    browser
        .wait_text("main [role=alert]", "`q` must be", Duration::from_secs(15))
        .await;

    // The page's reader against the logs endpoint, cut mid-stream: it resumes with
    // Last-Event-ID; no line repeats and none is missing.
    let resumed = browser
        .client
        .execute_async(
            r#"
            const [projectId, done] = arguments;
            import("/assets/js/sse.js").then(async ({ follow }) => {
              const url = `/v1/projects/${projectId}/logs?since=1h&stream=stderr&follow=true`;
              const headers = { authorization: `Bearer ${sessionStorage.getItem("cantila.token")}` };
              const asked = [];
              const ids = [];
              const stop = new AbortController();
              await follow({
                signal: stop.signal,
                isFinal: () => false,
                connect: async (lastEventId) => {
                  asked.push(lastEventId);
                  const h = lastEventId ? { ...headers, "last-event-id": lastEventId } : headers;
                  const response = await fetch(url, { headers: h, signal: stop.signal });
                  if (asked.length > 1) return response;
                  const reader = response.body.getReader();
                  let sent = 0;
                  const cut = new ReadableStream({
                    async pull(controller) {
                      const { value, done: end } = await reader.read();
                      if (end || sent >= 600) { reader.cancel(); controller.close(); return; }
                      const part = value.slice(0, 600 - sent);
                      sent += part.length;
                      controller.enqueue(part);
                    },
                  });
                  return new Response(cut, { status: 200 });
                },
                onEvent: (event) => {
                  ids.push(Number(event.id));
                  if (asked.length > 1 && ids.length >= 12) stop.abort();
                },
                onState: (state) => { if (state === "reconnecting") stop.signal.throwIfAborted(); },
              }).catch(() => {});
              done({ asked, ids });
            }).catch((error) => done({ error: String(error) }));
            "#,
            vec![json!(project_id)],
        )
        .await
        .unwrap();
    assert!(resumed.get("error").is_none(), "{resumed}");
    let ids: Vec<i64> = resumed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    let asked = resumed["asked"].as_array().unwrap();
    assert_eq!(asked.len(), 2, "one reconnect: {resumed}");
    assert_ne!(asked[1], "", "the reconnect sent Last-Event-ID");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {ids:?}"
    );
    let stored = daemon
        .get(
            &format!("/v1/projects/{project_id}/logs?since=1h&stream=stderr&limit=5000"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let last = *ids.last().unwrap();
    let expected: Vec<i64> = stored["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .filter(|id| *id <= last)
        .collect();
    assert_eq!(ids, expected, "every stored line once, across the cut");

    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_metrics_draws_svg_charts_with_axes_and_text_and_refreshes() {
    let daemon = TestDaemon::start_with(|c| c.metrics.interval_secs = 1).await;
    let repo = Repo::busybox("measured\n");
    let (project_id, _) = daemon.connected_project("measured", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    let host = "measured.admin.test.local";
    for _ in 0..20 {
        assert_eq!(edge_get(&daemon, host, "/").await, 200);
    }
    for _ in 0..5 {
        assert_eq!(edge_get(&daemon, host, "/missing").await, 404);
    }
    let metrics_path = format!("/v1/projects/{project_id}/metrics?since=1h&step=1m");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = daemon
            .get(&metrics_path, &daemon.admin_token)
            .await
            .expect(200)
            .body;
        if report["summary"]["requests"].as_u64() >= Some(25)
            && !report["summary"]["cpuPercent"].is_null()
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never counted: {report}");
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{project_id}")).await;
    browser.click("Metrics").await;
    browser.find("[data-testid=chart-latency]").await;

    // Four charts, each an image named by its <title> and described in words by <desc>,
    // with labelled axes and drawn lines.
    let charts = browser
        .js(
            "return [...document.querySelectorAll('svg.chart-svg')].map(svg => ({
               role: svg.getAttribute('role'),
               title: svg.querySelector('title').textContent,
               desc: svg.querySelector('desc').textContent,
               labelled: svg.getAttribute('aria-labelledby').split(' ').every(id => document.getElementById(id)),
               axisLabels: svg.querySelectorAll('text.axis-label').length,
               drawn: svg.querySelectorAll('.series polyline, .series circle').length,
             }))",
            vec![],
        )
        .await;
    let charts = charts.as_array().unwrap();
    let titles: Vec<&str> = charts
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["CPU", "Memory", "Requests per second", "Latency"]);
    for chart in charts {
        assert_eq!(chart["role"], "img", "{chart}");
        assert_eq!(chart["labelled"], true, "{chart}");
        assert_eq!(
            chart["axisLabels"], 6,
            "three values and three times: {chart}"
        );
        assert!(chart["drawn"].as_u64().unwrap() > 0, "{chart}");
        assert!(
            chart["desc"].as_str().unwrap().contains("latest"),
            "{chart}"
        );
    }
    let requests_desc = charts[2]["desc"].as_str().unwrap();
    for class in ["2xx", "4xx"] {
        assert!(
            requests_desc.contains(&format!("{class}: latest"))
                && !requests_desc.contains(&format!("{class}: no data")),
            "{requests_desc}"
        );
    }
    assert!(
        !requests_desc.contains("4xx: latest 0/s, peak 0/s"),
        "the 404s are counted as 4xx: {requests_desc}"
    );

    // The figures as tables, one row per point of the window, as the API reports them.
    let report = daemon
        .get(&metrics_path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let points = report["series"].as_array().unwrap().len();
    let rows = browser
        .js(
            "return [...document.querySelectorAll('.chart-data tbody')].map(b => b.rows.length)",
            vec![],
        )
        .await;
    assert_eq!(rows, json!([points, points, points, points]));
    let shown: u64 = browser
        .find("[data-testid=stat-requests]")
        .await
        .text()
        .await
        .unwrap()
        .replace([',', ' ', '\u{a0}'], "")
        .parse()
        .unwrap();
    assert!(shown >= 25, "{shown}");
    browser.screenshot("metrics").await;

    // The page refreshes by itself: more requests show up without a reload.
    for _ in 0..30 {
        assert_eq!(edge_get(&daemon, host, "/").await, 200);
    }
    browser
        .wait_js(
            "the request count refreshes",
            "return Number(document.querySelector('[data-testid=stat-requests]').textContent.replace(/[^0-9]/g, '')) >= 55",
            Duration::from_secs(45),
        )
        .await;

    // Another window: 15 minutes in 10 s steps.
    browser
        .find("select[name=window] option[value='15m|10s']")
        .await
        .click()
        .await
        .unwrap();
    let fine = daemon
        .get(
            &format!("/v1/projects/{project_id}/metrics?since=15m&step=10s"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let fine_points = fine["series"].as_array().unwrap().len();
    assert!(fine_points >= 90, "{fine_points}");
    browser
        .wait_js(
            "the 15-minute window in 10 s points",
            &format!("return [...document.querySelectorAll('.chart-data tbody')].every(b => b.rows.length === {fine_points})"),
            Duration::from_secs(15),
        )
        .await;

    // On a phone the charts fit the screen (reading the widths lays the page out anew).
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .wait_js(
            "the window is phone-sized",
            "return window.innerWidth <= 390",
            Duration::from_secs(15),
        )
        .await;
    let overflow = browser
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await;
    let shot = browser.screenshot("phone-metrics").await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the metrics page scrolls sideways by {overflow} px; see {}",
        shot.display()
    );
    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_instances_show_their_process_type_and_workers_scale_on_their_own() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let project_id = deploy_chatty_app(&daemon, "chores").await;
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{project_id}")).await;

    // Each instance with its process type.
    browser
        .wait_js(
            "a web and a worker instance are listed",
            "return document.querySelectorAll('[data-testid=instances] tr[data-process=web]').length === 1 \
               && document.querySelectorAll('[data-testid=instances] tr[data-process=worker]').length === 1",
            Duration::from_secs(15),
        )
        .await;
    let web_before = browser
        .find("[data-testid=instances] tr[data-process=web]")
        .await
        .attr("data-instance")
        .await
        .unwrap()
        .unwrap();
    browser
        .wait_text(
            "[data-testid=process-counts] li[data-process=worker]",
            "1 instance",
            Duration::from_secs(5),
        )
        .await;

    // Two workers from the console; web is left alone.
    browser.fill("input[name=process-worker]", "2").await;
    browser.click("Apply counts").await;
    browser
        .wait_text(
            "[data-testid=process-form]",
            "Scaled worker to 2",
            Duration::from_secs(120),
        )
        .await;
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["processes"], json!({ "web": 1, "worker": 2 }));
    browser
        .wait_js(
            "two healthy workers and the same web instance",
            &format!(
                "return document.querySelectorAll('[data-testid=instances] tr[data-process=worker][data-instance-state=healthy]').length === 2 \
                   && [...document.querySelectorAll('[data-testid=instances] tr[data-process=web]')].map(r => r.dataset.instance).join() === '{web_before}'"
            ),
            Duration::from_secs(30),
        )
        .await;
    browser
        .wait_text(
            "[data-testid=process-counts] li[data-process=worker]",
            "2 instances",
            Duration::from_secs(5),
        )
        .await;
    browser.screenshot("instances").await;

    // A count the API refuses is shown in its words, and nothing changes.
    browser
        .js(
            "const i = document.querySelector('input[name=process-worker]'); i.removeAttribute('max'); i.value = '99'; return true",
            vec![],
        )
        .await;
    browser.click("Apply counts").await;
    browser
        .wait_text(
            "[data-testid=process-form] [role=alert]",
            "between 0 and 10",
            Duration::from_secs(15),
        )
        .await;
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["processes"]["worker"], 2);

    // A read token sees the counts, not the form.
    let read = daemon.token("read").await;
    browser.click("Sign out").await;
    browser.sign_in(&read).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{project_id}")).await;
    browser
        .wait_text(
            "[data-testid=process-counts]",
            "worker 2 instances",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(browser.count("[data-testid=process-form]").await, 0);
    browser.close().await;
    cleanup(&project_id).await;
}

/// A client of the daemon's HTTPS edge that trusts its local CA (self-signed mode) and
/// reaches `host` there.
fn local_ca_client(daemon: &TestDaemon, host: &str) -> reqwest::Client {
    let ca_path = daemon.data_dir().join("certs/local-ca/ca.pem");
    let ca = std::fs::read(&ca_path).unwrap_or_else(|_| panic!("{} exists", ca_path.display()));
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(host, daemon.https)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The base64 SHA-256 of the public key of the certificate issued for `host`, as
/// Chromium's `--ignore-certificate-errors-spki-list` takes it.
fn served_key_pin(daemon: &TestDaemon, host: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let path = daemon
        .data_dir()
        .join(format!("certs/hosts/{host}/fullchain.pem"));
    let pem = std::fs::read(&path).unwrap_or_else(|_| panic!("{} exists", path.display()));
    let (_, leaf) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let certificate = leaf.parse_x509().unwrap();
    let key = certificate.tbs_certificate.subject_pki.raw;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(key))
}

/// Waits until `host` is served over HTTPS with a certificate the local CA signed for it
/// (the certificate is requested in the background at start-up).
async fn wait_for_certificate(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(url).send().await {
            Ok(_) => return,
            Err(err) => assert!(
                Instant::now() < deadline,
                "{url} never served a valid certificate: {err:?}"
            ),
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn console_hostname_serves_the_console_and_the_api_over_https_on_the_edge() {
    // Off by default: the name is an unknown host to the edge.
    let plain = TestDaemon::start().await;
    assert_eq!(edge_get(&plain, "console.test.local", "/").await, 404);
    drop(plain);

    let host = "panel.example.test";
    let daemon = TestDaemon::start_with(|c| {
        c.tls.mode = cantila::tls::TlsMode::SelfSigned;
        c.console.enabled = true;
        c.console.hostname = Some("Panel.Example.Test".to_owned());
    })
    .await;
    let base = format!("https://{host}:{}", daemon.https.port());
    let client = local_ca_client(&daemon, host);
    wait_for_certificate(&client, &format!("{base}/")).await;

    // Plain HTTP only redirects, so a token is never sent there in the clear.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/v1/account?x=1", daemon.http))
        .header("host", "PANEL.example.test:80")
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect.headers()["location"],
        "https://panel.example.test/v1/account?x=1"
    );
    assert!(redirect
        .headers()
        .get("strict-transport-security")
        .is_none());

    // The console's page and files, with their security headers.
    let page = client.get(format!("{base}/projects")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // The name has its certificate and redirects plain HTTP: browsers are told to stay on
    // HTTPS for a year (`[edge] hsts_max_age_secs`), for this name only.
    assert_eq!(
        page.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("require-trusted-types-for 'script'"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains(r#"<script type="module" src="/assets/js/app.js">"#));
    let script = client
        .get(format!("{base}/assets/js/views/logs.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    // The API on the same origin: its auth, its errors, its mutations.
    let refused = client
        .get(format!("{base}/v1/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    let account: Value = client
        .get(format!("{base}/v1/account"))
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["handle"], "admin");
    let created = client
        .post(format!("{base}/v1/projects"))
        .bearer_auth(&daemon.admin_token)
        .json(&json!({ "name": "via-console-host" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    // The same store as the API listener.
    daemon
        .get(&format!("/v1/projects/{id}"), &daemon.admin_token)
        .await
        .expect(200);
    assert_eq!(
        client
            .get(format!("{base}/v1/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The console's hostname cannot become a project's alias.
    let taken = daemon
        .post(
            &format!("/v1/projects/{id}/aliases"),
            &daemon.admin_token,
            json!({ "hostname": "panel.example.test" }),
        )
        .await
        .expect(409);
    assert!(
        taken.error_message().contains("console hostname"),
        "{}",
        taken.text
    );
}

#[tokio::test]
async fn console_on_its_own_hostname_over_https_signs_in_and_follows_a_deploy() {
    let daemon = TestDaemon::start_with(|c| {
        c.tls.mode = cantila::tls::TlsMode::SelfSigned;
        c.console.enabled = true;
    })
    .await;
    let host = "console.test.local";
    let base = format!("https://{host}:{}", daemon.https.port());
    wait_for_certificate(&local_ca_client(&daemon, host), &format!("{base}/")).await;
    let repo = Repo::busybox("deployed from console.test.local\n");
    let (project_id, _) = daemon.connected_project("over-https", &repo).await;

    // Chromium reaches the name on the edge's port and trusts exactly the key of the
    // certificate issued for it (the local CA is not in Chromium's store; the chain itself
    // is checked by the client above).
    let browser = Browser::start_on(
        base.clone(),
        &[
            format!("--host-resolver-rules=MAP {host} 127.0.0.1"),
            format!(
                "--ignore-certificate-errors-spki-list={}",
                served_key_pin(&daemon, host)
            ),
        ],
    )
    .await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text(
            "[data-testid=project-list]",
            "over-https",
            Duration::from_secs(15),
        )
        .await;
    let origin = browser.js("return location.origin", vec![]).await;
    assert_eq!(origin, base.as_str());
    // The page, its modules and its API calls all went over HTTP/2 to the edge.
    let protocols = browser
        .js(
            "return [...performance.getEntriesByType('navigation'), \
             ...performance.getEntriesByType('resource')].map(e => e.nextHopProtocol)",
            vec![],
        )
        .await;
    let protocols = protocols.as_array().unwrap();
    assert!(protocols.len() > 10, "{protocols:?}");
    assert!(protocols.iter().all(|p| p == "h2"), "{protocols:?}");

    // A deploy started here streams its build log through the edge to `running`.
    browser.goto(&format!("/projects/{project_id}")).await;
    browser
        .find("[data-testid=deploy]")
        .await
        .click()
        .await
        .unwrap();
    browser.find("[data-testid=progress]").await;
    browser
        .wait_text(
            "[data-testid=deploy-status]",
            "running",
            Duration::from_secs(240),
        )
        .await;
    let log = browser
        .js("return document.querySelector('ol.log').innerText", vec![])
        .await;
    assert!(log.as_str().unwrap().contains("traffic switched"), "{log}");
    browser.screenshot("console-host").await;

    // The webhook URL the console shows is on this public origin.
    browser.click("Git").await;
    let webhook_url = browser
        .find("input[data-testid=webhook-url]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        webhook_url,
        format!("{base}/v1/projects/{project_id}/git/webhook")
    );
    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_data_pages_wire_a_database_reveal_its_credentials_and_back_up_download_and_restore(
) {
    let daemon = crate::data::data_daemon().await;
    let id = daemon.create_project("vault").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{id}/data")).await;
    browser
        .wait_text(
            "[data-testid=database]",
            "No database",
            Duration::from_secs(15),
        )
        .await;

    // A PostgreSQL database from the console; its details, and the credentials masked
    // until asked for.
    browser.click("Add database").await;
    browser
        .wait_text(
            "[data-testid=database-facts]",
            "available",
            Duration::from_secs(30),
        )
        .await;
    let credentials = daemon
        .get(
            &format!("/v1/projects/{id}/database/credentials"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let password = credentials["env"]["PGPASSWORD"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = credentials["env"]["PGUSER"].as_str().unwrap().to_owned();
    let database = credentials["env"]["PGDATABASE"]
        .as_str()
        .unwrap()
        .to_owned();
    let facts = browser
        .find("[data-testid=database-facts]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        facts.contains("postgres") && facts.contains(&user),
        "{facts}"
    );
    let page = browser.find("main").await.text().await.unwrap();
    assert!(!page.contains(&password), "the password is not on the page");
    assert_eq!(browser.count("[data-testid=credentials] .masked").await, 1);
    browser.click("Reveal credentials").await;
    let shown = browser
        .find("[data-testid=credentials] input[aria-label=PGPASSWORD]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown, password);
    let url = browser
        .find("[data-testid=credentials] input[aria-label=DATABASE_URL]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url, credentials["env"]["DATABASE_URL"].as_str().unwrap());
    browser.screenshot("data").await;
    browser.click("Hide credentials").await;
    assert_eq!(browser.count("[data-testid=credentials] input").await, 0);

    // Volumes: one added; a bad mount path is refused in the API's words.
    browser.fill("input[name=name]", "files").await;
    browser.fill("input[name=mountPath]", "/app/files").await;
    browser.click("Add volume").await;
    browser
        .wait_text(
            "[data-testid=volume-list]",
            "/app/files",
            Duration::from_secs(15),
        )
        .await;
    let refused = daemon
        .post(
            &format!("/v1/projects/{id}/volumes"),
            &daemon.admin_token,
            json!({ "name": "bad", "mountPath": "/" }),
        )
        .await
        .expect(422);
    browser.fill("input[name=name]", "bad").await;
    browser.fill("input[name=mountPath]", "/").await;
    browser.click("Add volume").await;
    browser
        .wait_text(
            "[data-testid=volumes] [role=alert]",
            refused.error_message(),
            Duration::from_secs(15),
        )
        .await;

    // Data to back up.
    let client = crate::data::connect_as(&user, &password, &database)
        .await
        .unwrap();
    client
        .batch_execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('before');")
        .await
        .unwrap();

    // Back up now: the database and the volume, followed until they complete.
    browser.click("Backups").await;
    browser.click("Back up now").await;
    browser
        .wait_js(
            "both backups complete",
            "const rows = [...document.querySelectorAll('[data-testid=backup-list] tr[data-backup]')]; \
             return rows.length === 2 && rows.every(r => r.dataset.status === 'completed')",
            Duration::from_secs(120),
        )
        .await;
    let listed = daemon
        .get(&format!("/v1/projects/{id}/backups"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let dump = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "database")
        .unwrap()
        .clone();
    let dump_id = dump["id"].as_str().unwrap().to_owned();

    // Download: fetched with the token, checked against its SHA-256 in the page.
    let row = browser.find(&format!("tr[data-backup={dump_id}]")).await;
    row.find(Locator::Css("[data-testid=download]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = browser
        .wait_text(
            "[data-testid=backups-outcome]",
            "its SHA-256 matches",
            Duration::from_secs(30),
        )
        .await;
    assert!(said.contains(&format!("vault-{dump_id}")), "{said}");

    // Restore over changed data, behind the second click.
    client
        .batch_execute("INSERT INTO notes VALUES ('after');")
        .await
        .unwrap();
    drop(client);
    let row = browser.find(&format!("tr[data-backup={dump_id}]")).await;
    row.find(Locator::Css("[data-testid=restore]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.click("Restore: replace the current data").await;
    browser
        .wait_text(
            "[data-testid=backups-outcome]",
            "Restored",
            Duration::from_secs(120),
        )
        .await;
    let client = crate::data::connect_as(&user, &password, &database)
        .await
        .unwrap();
    let rows: Vec<String> = client
        .query("SELECT body FROM notes ORDER BY body", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, ["before"], "the data as it was backed up");
    drop(client);
    browser
        .wait_text(
            "[data-testid=backup-list]",
            "safety",
            Duration::from_secs(15),
        )
        .await;
    browser.screenshot("backups").await;

    // The schedule and its retention, edited with the keyboard (typed, saved with Enter).
    // A schedule the API refuses: its words, nothing saved.
    let schedule_path = format!("/v1/projects/{id}/backups/schedule");
    let refused = daemon
        .call(
            Method::PUT,
            &schedule_path,
            Some(&daemon.admin_token),
            Some(json!({ "schedule": "every tuesday" })),
        )
        .await
        .expect(422);
    browser.fill("input[name=schedule]", "every tuesday").await;
    let enter = "\u{E007}";
    browser
        .find("input[name=schedule]")
        .await
        .send_keys(enter)
        .await
        .unwrap();
    browser
        .wait_text(
            "[data-testid=schedule-form] [role=alert]",
            refused.error_message(),
            Duration::from_secs(15),
        )
        .await;
    let unchanged = daemon
        .get(&schedule_path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_ne!(unchanged["source"], "project", "{unchanged}");

    // A good one, with both counts.
    browser.fill("input[name=schedule]", "daily at 04:30").await;
    browser.fill("input[name=keepDaily]", "5").await;
    browser.fill("input[name=keepWeekly]", "3").await;
    browser
        .find("input[name=keepWeekly]")
        .await
        .send_keys(enter)
        .await
        .unwrap();
    browser
        .wait_text(
            "[data-testid=schedule-outcome]",
            "Saved",
            Duration::from_secs(15),
        )
        .await;
    browser
        .wait_text(
            "[data-testid=schedule-spec]",
            "daily at 04:30",
            Duration::from_secs(15),
        )
        .await;
    let keeps = browser
        .wait_text(
            "[data-testid=schedule-keeps]",
            "5 days",
            Duration::from_secs(15),
        )
        .await;
    assert!(keeps.contains("3 weeks"), "{keeps}");
    let saved = daemon
        .get(&schedule_path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(saved["schedule"], "daily at 04:30", "{saved}");
    assert_eq!(saved["keepDaily"], 5, "{saved}");
    assert_eq!(saved["keepWeekly"], 3, "{saved}");
    assert_eq!(saved["source"], "project", "{saved}");
    // Both counts 0 would prune everything: the API's words again, the schedule kept.
    let refused = daemon
        .call(
            Method::PUT,
            &schedule_path,
            Some(&daemon.admin_token),
            Some(json!({ "schedule": "daily at 04:30", "keepDaily": 0, "keepWeekly": 0 })),
        )
        .await
        .expect(422);
    browser.fill("input[name=keepDaily]", "0").await;
    browser.fill("input[name=keepWeekly]", "0").await;
    browser.click("Save schedule").await;
    browser
        .wait_text(
            "[data-testid=schedule-form] [role=alert]",
            refused.error_message(),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        daemon
            .get(&schedule_path, &daemon.admin_token)
            .await
            .expect(200)
            .body["keepDaily"],
        5
    );
    browser.screenshot("backup-schedule").await;
    // Removing the project's own schedule, behind a second click.
    browser.click("Remove the project schedule").await;
    browser.click("Remove: back to the server default").await;
    browser
        .wait_text(
            "[data-testid=schedule-outcome]",
            "removed",
            Duration::from_secs(15),
        )
        .await;
    let removed = daemon
        .get(&schedule_path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_ne!(removed["source"], "project", "{removed}");
    assert_eq!(browser.count("[data-testid=remove-schedule]").await, 0);
    // And set again, for the read token below to see.
    browser.fill("input[name=schedule]", "30 2 * * 1-5").await;
    browser.fill("input[name=keepDaily]", "").await;
    browser.fill("input[name=keepWeekly]", "").await;
    browser.click("Save schedule").await;
    browser
        .wait_text(
            "[data-testid=schedule-spec]",
            "30 2 * * 1-5",
            Duration::from_secs(15),
        )
        .await;

    // A read token: masked credentials without a way to reveal them, no download, no restore.
    let read = daemon.token("read").await;
    browser.click("Sign out").await;
    browser.sign_in(&read).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{id}/data")).await;
    browser
        .wait_text(
            "[data-testid=credentials]",
            "deploy tokens only",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(browser.count("[data-testid=reveal]").await, 0);
    browser.goto(&format!("/projects/{id}/backups")).await;
    browser
        .wait_text(
            "[data-testid=backup-list]",
            "completed",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        browser
            .count("[data-testid=download], [data-testid=restore], [data-testid=backup-now]")
            .await,
        0
    );
    // The schedule is shown, not editable.
    browser
        .wait_text(
            "[data-testid=schedule-spec]",
            "30 2 * * 1-5",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        browser
            .count("[data-testid=schedule-form], [data-testid=remove-schedule], main textarea")
            .await,
        0
    );
    browser.close().await;
    crate::data::clean_up(&daemon, &[&id]).await;
    crate::data::remove_installation_volumes(&daemon).await;
}

/// The body the edge answers for `host` over plain HTTP.
async fn edge_text(daemon: &TestDaemon, host: &str, path: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .get(format!("http://{}{path}", daemon.http))
        .header("host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn console_previews_are_created_linked_and_deleted_and_assets_are_listed() {
    let daemon = TestDaemon::start().await;
    // A static site: published to disk, no container needed.
    let repo = Repo::new(&[
        ("index.html", "main\n"),
        ("css/site.css", "body{}"),
        ("css/print.css", "p{}"),
    ]);
    repo.commit_on_branch("feature/new-look", &[("index.html", "new look\n")], "look");
    let (id, _) = daemon.connected_project("brochure", &repo).await;
    let deploy = daemon.deploy(&id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();

    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;

    // Assets of the live release, filtered by path.
    browser.goto(&format!("/projects/{id}/assets")).await;
    browser
        .wait_text(
            "[data-testid=asset-deploy]",
            &deploy_id,
            Duration::from_secs(15),
        )
        .await;
    let paths = browser
        .js(
            "return [...document.querySelectorAll('[data-testid=asset-list] tr[data-path]')].map(r => r.dataset.path)",
            vec![],
        )
        .await;
    assert_eq!(
        paths,
        json!(["css/print.css", "css/site.css", "index.html"])
    );
    browser.screenshot("assets").await;
    browser.fill("input[name=prefix]", "css/s").await;
    browser.click("Filter").await;
    browser
        .wait_js(
            "only css/site.css",
            "const r = [...document.querySelectorAll('[data-testid=asset-list] tr[data-path]')]; \
             return r.length === 1 && r[0].dataset.path === 'css/site.css'",
            Duration::from_secs(15),
        )
        .await;

    // A preview of the branch from the console; it is linked to its own hostname.
    browser.click("Previews").await;
    browser
        .wait_text(
            "[data-testid=preview-list]",
            "No previews",
            Duration::from_secs(15),
        )
        .await;
    browser.fill("input[name=branch]", "feature/new-look").await;
    // Env overrides as KEY=value lines (a comment and a blank line are skipped).
    browser
        .fill(
            "textarea[name=env]",
            "GREETING=hello from the console\n# staging only\n\nAPI_BASE=https://staging.example.com/?a=b",
        )
        .await;
    browser.click("Create preview").await;
    browser
        .wait_js(
            "the preview runs",
            "const r = document.querySelector('[data-testid=preview-list] tr[data-preview]'); \
             return !!r && r.dataset.status === 'running'",
            Duration::from_secs(120),
        )
        .await;
    let previews = daemon
        .get(&format!("/v1/projects/{id}/previews"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let preview = previews["previews"][0].clone();
    let hostname = preview["hostname"].as_str().unwrap();
    // The overrides reached the API (it lists their keys, never their values).
    assert_eq!(
        preview["envKeys"],
        json!(["API_BASE", "GREETING"]),
        "{preview}"
    );
    let link = browser
        .find("[data-testid=preview-list] tr[data-preview] th a")
        .await;
    assert_eq!(link.text().await.unwrap(), hostname);
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        preview["url"].as_str()
    );
    assert_eq!(
        edge_text(&daemon, hostname, "/").await,
        (200, "new look\n".to_owned())
    );
    browser.screenshot("previews").await;

    // A ref that does not exist: the API's words.
    let refused = daemon
        .post(
            &format!("/v1/projects/{id}/previews"),
            &daemon.admin_token,
            json!({ "branch": "a..b" }),
        )
        .await
        .expect(422);
    browser.fill("input[name=branch]", "a..b").await;
    browser.click("Create preview").await;
    browser
        .wait_text(
            "[data-testid=preview-form] [role=alert]",
            refused.error_message(),
            Duration::from_secs(15),
        )
        .await;

    // Env keys are the API's to judge: its words for a bad one, and nothing changes.
    let refused = daemon
        .post(
            &format!("/v1/projects/{id}/previews"),
            &daemon.admin_token,
            json!({ "branch": "feature/new-look", "env": { "1BAD": "x" } }),
        )
        .await
        .expect(422);
    browser.fill("input[name=branch]", "feature/new-look").await;
    browser.fill("textarea[name=env]", "1BAD=x").await;
    browser.click("Create preview").await;
    browser
        .wait_text(
            "[data-testid=preview-form] [role=alert]",
            refused.error_message(),
            Duration::from_secs(15),
        )
        .await;
    // A line that is not a pair is refused before anything is sent, naming the line.
    browser
        .fill("textarea[name=env]", "GREETING=hi\noops")
        .await;
    browser.click("Create preview").await;
    browser
        .wait_text(
            "[data-testid=preview-form] [role=alert]",
            "env line 2 is not KEY=value",
            Duration::from_secs(15),
        )
        .await;
    let unchanged = daemon
        .get(&format!("/v1/projects/{id}/previews"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        unchanged["previews"][0]["envKeys"],
        json!(["API_BASE", "GREETING"])
    );
    assert_eq!(unchanged["previews"][0]["deployId"], preview["deployId"]);

    // Deleted behind a second click; the hostname stops answering.
    browser.fill("textarea[name=env]", "").await;
    browser.fill("input[name=branch]", "").await;
    browser.click(&format!("Delete {hostname}")).await;
    browser.click(&format!("Delete {hostname}")).await;
    browser
        .wait_text(
            "[data-testid=preview-list]",
            "No previews",
            Duration::from_secs(30),
        )
        .await;
    let left = daemon
        .get(&format!("/v1/projects/{id}/previews"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(left["previews"], json!([]));
    assert_eq!(edge_text(&daemon, hostname, "/").await.0, 404);
    browser.close().await;
    cleanup(&id).await;
}

#[tokio::test]
async fn console_backups_show_their_off_site_copy_when_uploads_are_on() {
    use crate::backup_s3::{
        backups_of, project_with_volume, s3_config, s3_endpoint, wait_remote, TestBucket,
    };
    let bucket = TestBucket::create().await;
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
    })
    .await;
    let (id, _) = project_with_volume(&daemon, "offsite", "files", &[("a.txt", b"kept")]).await;
    let backup = backups_of(&daemon, &id).await.remove(0);
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let uploaded = wait_remote(&daemon, &backup_id, "uploaded").await;
    let key = uploaded["remote"]["key"].as_str().unwrap().to_owned();

    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(&format!("/projects/{id}/backups")).await;
    let cell = browser
        .wait_text(
            &format!("[data-backup='{backup_id}'] [data-testid=backup-remote]"),
            "uploaded",
            Duration::from_secs(15),
        )
        .await;
    assert!(cell.contains(&key), "the copy's key is shown: {cell}");
    // The headings as written (the style shows them in capitals).
    let header = browser
        .js(
            "return document.querySelector('[data-testid=backup-list] thead').textContent",
            vec![],
        )
        .await;
    let header = header.as_str().unwrap_or_default();
    assert!(
        header.contains("SHA-256") && header.contains("Off-site copy"),
        "{header}"
    );
    browser.screenshot("backups-offsite").await;
    browser.close().await;
    crate::data::remove_installation_volumes(&daemon).await;
}

/// The page's markup and every form control's current value: what a screen could show.
const PAGE_TEXT: &str = "return document.documentElement.outerHTML + [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')";

#[tokio::test]
async fn console_build_section_sets_build_settings_and_secrets_and_shows_where_they_come_from() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[
        ("README.md", "monorepo\n"),
        (
            "apps/web/docker/Dockerfile",
            "FROM busybox AS prod\nCMD [\"true\"]\n\nFROM busybox\nCMD [\"true\"]\n",
        ),
    ]);
    let (id, _) = daemon.connected_project("monorepo", &repo).await;
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto(&format!("/projects/{id}/build")).await;
    browser
        .wait_text(
            "[data-testid=build-secret-list]",
            "No build secrets",
            Duration::from_secs(60),
        )
        .await;

    // Every setting from the form reaches the API.
    browser.fill("input[name=rootDir]", "apps/web").await;
    browser
        .fill("input[name=dockerfile]", "docker/Dockerfile")
        .await;
    browser.fill("input[name=target]", "prod").await;
    browser
        .fill(
            "textarea[name=buildArgs]",
            "NODE_ENV=production\n# a comment\n\nGREETING=a=b",
        )
        .await;
    browser
        .fill("textarea[name=watchPaths]", "apps/web/**\n\npackages/**")
        .await;
    browser.click("Save build settings").await;
    browser
        .wait_text(
            "[data-testid=build-form] .outcome",
            "saved",
            Duration::from_secs(60),
        )
        .await;
    let project = daemon
        .get(&format!("/v1/projects/{id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        project["build"],
        json!({
            "rootDir": "apps/web",
            "dockerfile": "docker/Dockerfile",
            "target": "prod",
            "buildArgs": { "NODE_ENV": "production", "GREETING": "a=b" },
            "watchPaths": ["apps/web/**", "packages/**"],
        }),
        "{project}"
    );

    // A bad value: the API's message, naming the field, next to the form; nothing changes.
    browser.fill("input[name=target]", "not a stage!").await;
    browser.click("Save build settings").await;
    browser
        .wait_text(
            "[data-testid=build-form] [role=alert]",
            "build.target",
            Duration::from_secs(60),
        )
        .await;
    let project = daemon
        .get(&format!("/v1/projects/{id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["build"]["target"], "prod", "{project}");
    browser.fill("input[name=target]", "prod").await;

    // Where each setting comes from, from the deploy plan.
    browser.click("Show where each setting comes from").await;
    browser
        .wait_js(
            "the plan's sources",
            "return document.querySelectorAll('[data-testid=build-origins] tr[data-setting]').length === 5",
            Duration::from_secs(120),
        )
        .await;
    let sources = browser
        .js(
            "return Object.fromEntries([...document.querySelectorAll('[data-testid=build-origins] tr[data-setting]')].map(r => [r.dataset.setting, r.dataset.source]))",
            vec![],
        )
        .await;
    assert_eq!(
        sources,
        json!({ "rootDir": "api", "dockerfile": "api", "target": "api", "buildArgs": "api", "watchPaths": "api" })
    );
    browser.screenshot("build-settings").await;

    // A build secret: listed by name, its value never in the page.
    let value = "npm-secret-value-4242";
    browser
        .fill("[data-testid=build-secret-form] input[name=name]", "1BAD")
        .await;
    browser
        .fill("[data-testid=build-secret-form] input[name=value]", value)
        .await;
    browser.click("Save secret").await;
    browser
        .wait_text(
            "[data-testid=build-secret-form] [role=alert]",
            "name",
            Duration::from_secs(60),
        )
        .await;
    browser
        .fill(
            "[data-testid=build-secret-form] input[name=name]",
            "NPM_TOKEN",
        )
        .await;
    browser
        .fill("[data-testid=build-secret-form] input[name=value]", value)
        .await;
    browser.click("Save secret").await;
    browser
        .wait_text(
            "[data-testid=build-secret-list]",
            "NPM_TOKEN",
            Duration::from_secs(60),
        )
        .await;
    let secrets = daemon
        .get(
            &format!("/v1/projects/{id}/build-secrets"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(secrets["secrets"][0]["name"], "NPM_TOKEN", "{secrets}");
    let page = browser.js(PAGE_TEXT, vec![]).await;
    assert!(
        !page.as_str().unwrap().contains(value),
        "the secret's value is in the page"
    );
    browser.click("Remove NPM_TOKEN").await;
    browser.click("Remove NPM_TOKEN").await;
    browser
        .wait_text(
            "[data-testid=build-secret-list]",
            "No build secrets",
            Duration::from_secs(60),
        )
        .await;
    let secrets = daemon
        .get(
            &format!("/v1/projects/{id}/build-secrets"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(secrets["secrets"], json!([]), "{secrets}");
    browser.close().await;
    cleanup(&id).await;
}

#[tokio::test]
async fn console_image_section_connects_in_place_of_git_deploys_a_tag_and_disconnects() {
    let daemon = TestDaemon::start_with(|c| {
        // The image connected is on loopback, which the egress policy refuses by default.
        c.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let repo = Repo::busybox("from git\n");
    let (id, _) = daemon.connected_project("pulled", &repo).await;
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto(&format!("/projects/{id}/image")).await;
    browser
        .wait_text(
            "[data-testid=image-source]",
            "No image connected",
            Duration::from_secs(60),
        )
        .await;
    // Nothing listens on port 1: connecting pulls nothing, and the deploy below fails fast.
    let reference = "127.0.0.1:1/team/app:1.0";
    browser.fill("input[name=image]", reference).await;
    // Without the explicit choice, the API refuses to drop the git connection: its message.
    browser.click("Connect image").await;
    browser
        .wait_text(
            "[data-testid=image-form] [role=alert]",
            "git",
            Duration::from_secs(60),
        )
        .await;
    daemon
        .get(&format!("/v1/projects/{id}/git"), &daemon.admin_token)
        .await
        .expect(200);
    browser
        .find("input[name=replace]")
        .await
        .click()
        .await
        .unwrap();
    browser.click("Connect image").await;
    browser
        .wait_text(
            "[data-testid=image-reference]",
            reference,
            Duration::from_secs(60),
        )
        .await;
    let secret = browser
        .js(
            "return document.querySelector('[data-testid=image-webhook-secret]')?.value",
            vec![],
        )
        .await;
    let secret = secret
        .as_str()
        .expect("the webhook secret is shown once")
        .to_owned();
    let webhook_url = browser
        .js(
            "return document.querySelector('[data-testid=image-webhook-url]').value",
            vec![],
        )
        .await;
    assert_eq!(
        url::Url::parse(webhook_url.as_str().unwrap())
            .unwrap()
            .path(),
        format!("/v1/projects/{id}/image/webhook")
    );
    let image = daemon
        .get(&format!("/v1/projects/{id}/image"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(image["image"], reference, "{image}");
    daemon
        .get(&format!("/v1/projects/{id}/git"), &daemon.admin_token)
        .await
        .expect(404);
    // The secret shown is the one the webhook takes (a wrong one is refused).
    for (presented, wanted) in [(secret.as_str(), 200), ("wrong-secret", 401)] {
        let status = daemon
            .request(Method::POST, &format!("/v1/projects/{id}/image/webhook"))
            .bearer_auth(presented)
            .json(&json!({ "events": [] }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, wanted, "webhook with {presented}");
    }
    browser.screenshot("image-source").await;
    // Shown once: a fresh visit shows no secret.
    browser.goto(&format!("/projects/{id}/image")).await;
    browser
        .wait_text(
            "[data-testid=image-reference]",
            reference,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.count("[data-testid=image-webhook-secret]").await, 0);
    let page = browser.js(PAGE_TEXT, vec![]).await;
    assert!(
        !page.as_str().unwrap().contains(&secret),
        "the secret is shown again"
    );

    // Deploying one tag: a bad one is the API's message; a good one opens its deploy.
    browser
        .fill(
            "[data-testid=image-deploy-form] input[name=image]",
            "not a tag!",
        )
        .await;
    browser.click("Deploy this tag").await;
    browser
        .wait_text(
            "[data-testid=image-deploy-form] [role=alert]",
            "tag",
            Duration::from_secs(60),
        )
        .await;
    browser
        .fill("[data-testid=image-deploy-form] input[name=image]", "1.1")
        .await;
    browser.click("Deploy this tag").await;
    browser
        .wait_js(
            "the deploy's page",
            "return /\\/deploys\\/dep_/.test(location.pathname)",
            Duration::from_secs(60),
        )
        .await;
    let deploy_id = deploy_id_of(&browser.path().await);
    let deploy = crate::support::wait_for(Duration::from_secs(120), "the deploy ends", || {
        let daemon = &daemon;
        let deploy_id = deploy_id.clone();
        async move {
            let deploy = daemon
                .get(&format!("/v1/deploys/{deploy_id}"), &daemon.admin_token)
                .await
                .expect(200)
                .body;
            (deploy["finishedAt"].is_string()).then_some(deploy)
        }
    })
    .await;
    assert!(
        deploy["ref"].as_str().unwrap_or_default().contains("1.1"),
        "{deploy}"
    );

    browser.goto(&format!("/projects/{id}/image")).await;
    browser.click("Disconnect image").await;
    browser
        .click("Disconnect: the running release keeps serving")
        .await;
    browser
        .wait_text(
            "[data-testid=image-source]",
            "No image connected",
            Duration::from_secs(60),
        )
        .await;
    daemon
        .get(&format!("/v1/projects/{id}/image"), &daemon.admin_token)
        .await
        .expect(404);
    browser.close().await;
    cleanup(&id).await;
}

#[tokio::test]
async fn console_health_check_settings_and_registries_are_set_and_reset() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("checked").await;
    let id = project["id"].as_str().unwrap().to_owned();
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto(&format!("/projects/{id}/settings")).await;
    browser
        .wait_text(
            "[data-testid=health-current]",
            "Defaults",
            Duration::from_secs(60),
        )
        .await;
    // An http check with a status out of range: the API's message, naming the field.
    browser
        .fill("[data-testid=health-form] input[name=path]", "/healthz")
        .await;
    browser
        .fill("[data-testid=health-form] input[name=statusMin]", "700")
        .await;
    browser.click("Save health check").await;
    browser
        .wait_text(
            "[data-testid=health-form] [role=alert]",
            "statusMin",
            Duration::from_secs(60),
        )
        .await;
    browser
        .fill("[data-testid=health-form] input[name=statusMin]", "200")
        .await;
    browser
        .fill("[data-testid=health-form] input[name=statusMax]", "399")
        .await;
    browser
        .fill("[data-testid=health-form] input[name=startPeriodSecs]", "5")
        .await;
    browser.click("Save health check").await;
    browser
        .wait_text(
            "[data-testid=health-current]",
            "/healthz",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        health_of(&daemon, &id).await,
        json!({ "type": "http", "path": "/healthz", "statusMin": 200, "statusMax": 399, "startPeriodSecs": 5 })
    );
    // tcp: the http-only fields are hidden and not sent.
    let select = browser
        .find("[data-testid=health-form] select[name=type]")
        .await;
    select.select_by_value("tcp").await.unwrap();
    assert_eq!(
        browser
            .js("return document.querySelector('[data-testid=health-form] input[name=path]').closest('.field').hidden", vec![])
            .await,
        json!(true)
    );
    browser
        .fill("[data-testid=health-form] input[name=port]", "8080")
        .await;
    browser.click("Save health check").await;
    browser
        .wait_text(
            "[data-testid=health-current]",
            "tcp",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        health_of(&daemon, &id).await,
        json!({ "type": "tcp", "port": 8080, "startPeriodSecs": 5 })
    );
    browser.screenshot("health-check").await;
    browser.click("Reset to defaults").await;
    browser
        .wait_text(
            "[data-testid=health-current]",
            "Defaults",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(health_of(&daemon, &id).await, Value::Null);

    // Registries on the account page: the password goes in and never comes back.
    browser.goto("/account").await;
    browser
        .wait_text(
            "[data-testid=registry-list]",
            "No registry credentials",
            Duration::from_secs(60),
        )
        .await;
    let password = "registry-password-7781";
    browser
        .fill(
            "[data-testid=registry-form] input[name=server]",
            "https://registry.example.com/team",
        )
        .await;
    browser
        .fill("[data-testid=registry-form] input[name=username]", "robot")
        .await;
    browser
        .fill("[data-testid=registry-form] input[name=password]", password)
        .await;
    browser.click("Add registry").await;
    browser
        .wait_text(
            "[data-testid=registry-form] [role=alert]",
            "server",
            Duration::from_secs(60),
        )
        .await;
    browser
        .fill(
            "[data-testid=registry-form] input[name=server]",
            "registry.example.com:5000",
        )
        .await;
    browser
        .fill("[data-testid=registry-form] input[name=password]", password)
        .await;
    browser.click("Add registry").await;
    browser
        .wait_text(
            "[data-testid=registry-list]",
            "registry.example.com:5000",
            Duration::from_secs(60),
        )
        .await;
    let listed = daemon
        .get("/v1/registries", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        listed["registries"][0]["server"], "registry.example.com:5000",
        "{listed}"
    );
    assert_eq!(listed["registries"][0]["username"], "robot", "{listed}");
    let page = browser.js(PAGE_TEXT, vec![]).await;
    assert!(
        !page.as_str().unwrap().contains(password),
        "the password is in the page"
    );
    browser.screenshot("registries").await;
    browser.click("Remove registry.example.com:5000").await;
    browser.click("Remove registry.example.com:5000").await;
    browser
        .wait_text(
            "[data-testid=registry-list]",
            "No registry credentials",
            Duration::from_secs(60),
        )
        .await;
    let listed = daemon
        .get("/v1/registries", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["registries"], json!([]), "{listed}");
    browser.close().await;
}

/// The project's health check settings as the API shows them.
async fn health_of(daemon: &TestDaemon, id: &str) -> Value {
    daemon
        .get(&format!("/v1/projects/{id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body["healthCheck"]
        .clone()
}
