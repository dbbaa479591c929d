//! The web console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against a real daemon, real Docker and real git repos.
//! Screenshots of the main pages go to `<target dir>/console-screenshots/`. A missing
//! Chromium fails these tests; it never skips them (`scripts/test.sh` installs it).

use std::{
    net::TcpListener,
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
struct Browser {
    client: Client,
    base: String,
    _driver: Driver,
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    async fn start(daemon: &TestDaemon) -> Self {
        let turn = BROWSER_TURN.acquire().await.unwrap();
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the console tests need Debian's chromium and \
                 chromium-driver (scripts/test.sh installs them)"
            );
        }
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(CHROMEDRIVER).arg(format!("--port={port}")),
            0,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
        let driver = Driver { child };
        assert!(driver_ready(port).await, "chromedriver did not start");

        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
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
            base: format!("http://{}", daemon.api),
            _driver: driver,
            _profile: profile,
            _turn: turn,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The first element matching `css`, waiting up to 60 s for it to appear.
    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css}: {err}"))
    }

    /// A button or link by its visible words.
    async fn control(&self, words: &str) -> Element {
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

    async fn click(&self, words: &str) {
        self.control(words).await.click().await.unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Waits until the text of `css` contains `wanted`; returns the text.
    async fn wait_text(&self, css: &str, wanted: &str, timeout: Duration) -> String {
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
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let shot = self.screenshot("failure").await;
        panic!(
            "{css} never showed '{wanted}' within {timeout:?}; last text: '{last}' (see {})",
            shot.display()
        );
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/").await;
        let input = self.find("input[name=token]").await;
        // Keyboard only: type the token and press Enter.
        input.send_keys(token).await.unwrap();
        input.send_keys("\u{E007}").await.unwrap();
    }

    /// Browser console errors other than failed requests (which the console shows itself):
    /// script errors and Content-Security-Policy refusals land here.
    async fn script_errors(&self) -> Vec<String> {
        let logs = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or(Value::Null);
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .filter(|message| !message.contains("Failed to load resource"))
            .collect()
    }

    async fn close(self) {
        let errors = self.script_errors().await;
        let _ = self.client.clone().close().await;
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
        "Step 1/",
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

    // A phone-sized screen: nothing is wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (path, name) in [
        ("/projects".to_owned(), "phone-projects"),
        (format!("/projects/{project_id}"), "phone-project"),
        (
            format!("/projects/{project_id}/deploys/{rollback}"),
            "phone-build",
        ),
    ] {
        browser.goto(&path).await;
        browser.find("main h1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
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

    let pages = ["", "/deploys", "/env", "/domains", "/git", "/settings"];
    for page in pages {
        browser.goto(&format!("/projects/{id}{page}")).await;
        browser.find(".section-body > *").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let controls = browser
            .js(
                // Copying a value and jumping to the log's end change nothing.
                "return [...document.querySelectorAll('main form, main button:not(.copy-button):not(.jump), main input:not([readonly]), main select')].map(e => e.outerHTML.slice(0, 80))",
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
