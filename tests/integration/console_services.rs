//! The console's Services section in a real browser (headless Chromium over WebDriver,
//! see `console`) against a real daemon and the real Docker engine: an add-on added by
//! engine becomes ready and shows the names of the variables it wires, never their
//! values; an image service with a volume and env is added, scaled to two instances and
//! stopped; removing it is refused while its volume holds data, and the page's second,
//! explicit step deletes it with its data. A bad field is the API's message beside the
//! form. The test ends with `Browser::close`, which fails on any script error or
//! Content-Security-Policy refusal.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{console::Browser, support::TestDaemon};

/// Everything the page holds as text, input values included (secrets must not be there).
const PAGE_TEXT: &str = "return document.documentElement.outerHTML + [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')";

/// Long enough for an add-on's first start on a loaded 2-core machine.
const READY: Duration = Duration::from_secs(240);

async fn services_of(daemon: &TestDaemon, id: &str) -> Vec<Value> {
    let body = daemon
        .get(&format!("/v1/projects/{id}/services"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    body["services"].as_array().cloned().unwrap_or_default()
}

async fn service_of(daemon: &TestDaemon, id: &str, name: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{id}/services/{name}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body
}

impl Browser {
    /// Waits until the row of service `name` is in `state`.
    async fn wait_service_state(&self, name: &str, state: &str, timeout: Duration) {
        self.wait_js(
            &format!("{name} is {state} on the page"),
            &format!("return document.querySelector('tr[data-service={name}]')?.dataset.state === '{state}'"),
            timeout,
        )
        .await;
    }
}

#[tokio::test]
async fn console_services_add_an_addon_and_an_image_service_scale_and_remove_one_with_its_data() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("stacked").await;
    let id = project["id"].as_str().unwrap().to_owned();
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto(&format!("/projects/{id}/services")).await;
    browser
        .wait_text(
            "[data-testid=service-list]",
            "No services yet",
            Duration::from_secs(60),
        )
        .await;

    // A bad name: the API's message, naming the field, beside the form; nothing is made.
    browser
        .fill("[data-testid=service-form] input[name=name]", "1bad")
        .await;
    browser
        .fill(
            "[data-testid=service-form] input[name=image]",
            "busybox:latest",
        )
        .await;
    browser.click("Add service").await;
    browser
        .wait_text(
            "[data-testid=service-form] [role=alert]",
            "name",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(services_of(&daemon, &id).await, Vec::<Value>::new());

    // An add-on by engine: ready, with the names of the variables it wires.
    browser
        .find("[data-testid=addon-form] select[name=engine]")
        .await
        .select_by_value("redis")
        .await
        .unwrap();
    browser.click("Add add-on").await;
    browser.wait_service_state("redis", "ready", READY).await;
    let redis = service_of(&daemon, &id, "redis").await;
    assert_eq!(redis["source"], "addon", "{redis}");
    let wired: Vec<String> = redis["connection"]["envKeys"]
        .as_array()
        .unwrap_or_else(|| panic!("an add-on names what it wires: {redis}"))
        .iter()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect();
    assert!(wired.contains(&"REDIS_URL".to_owned()), "{redis}");
    let shown = browser
        .js(
            "return [...document.querySelectorAll('tr[data-service=redis] [data-testid=service-connection] [data-key]')].map(e => e.dataset.key)",
            vec![],
        )
        .await;
    assert_eq!(shown, json!(wired));
    let page = browser.js(PAGE_TEXT, vec![]).await;
    assert!(
        !page.as_str().unwrap().contains("redis://"),
        "a connection value is in the page"
    );

    // An image service with a volume holding a file, env and a tcp check.
    let secret_value = "greeting-value-5150";
    let form = "[data-testid=service-form]";
    browser
        .fill(&format!("{form} input[name=name]"), "files")
        .await;
    browser
        .fill(&format!("{form} input[name=image]"), "busybox:latest")
        .await;
    browser
        .fill(
            &format!("{form} input[name=command]"),
            "sh -c 'echo kept > /data/file && exec httpd -f -p 8080'",
        )
        .await;
    browser
        .fill(&format!("{form} input[name=port]"), "8080")
        .await;
    browser
        .find(&format!("{form} select[name=health]"))
        .await
        .select_by_value("tcp")
        .await
        .unwrap();
    browser
        .fill(&format!("{form} input[name=volume]"), "files:/data")
        .await;
    browser
        .fill(
            &format!("{form} textarea[name=env]"),
            &format!("GREETING={secret_value}"),
        )
        .await;
    browser.click("Add service").await;
    browser.wait_service_state("files", "ready", READY).await;
    let files = service_of(&daemon, &id, "files").await;
    assert_eq!(files["source"], "api", "{files}");
    assert_eq!(files["image"], "busybox:latest", "{files}");
    assert_eq!(files["envKeys"], json!(["GREETING"]), "{files}");
    assert_eq!(files["health"]["type"], "tcp", "{files}");
    assert_eq!(files["port"], 8080, "{files}");
    assert_eq!(files["volumes"][0]["path"], "/data", "{files}");
    let page = browser.js(PAGE_TEXT, vec![]).await;
    assert!(
        !page.as_str().unwrap().contains(secret_value),
        "a service's env value is in the page"
    );
    browser
        .wait_text(
            "tr[data-service=files]",
            "GREETING",
            Duration::from_secs(30),
        )
        .await;
    browser
        .js("window.scrollTo(0, 0); return true", vec![])
        .await;
    browser.screenshot("services").await;

    // Two instances, then none.
    for (count, instances, state) in [("2", 2, "ready"), ("0", 0, "stopped")] {
        browser
            .fill("tr[data-service=files] input[name=count]", count)
            .await;
        browser.click("Set count of files").await;
        browser.wait_service_state("files", state, READY).await;
        browser
            .wait_js(
                &format!("files shows {instances} instances"),
                &format!("return document.querySelector('tr[data-service=files] [data-testid=service-instances]')?.dataset.count === '{instances}'"),
                READY,
            )
            .await;
        let files = service_of(&daemon, &id, "files").await;
        assert_eq!(files["count"], instances, "{files}");
        assert_eq!(
            files["instances"].as_array().map(Vec::len),
            Some(instances as usize),
            "{files}"
        );
    }

    // Removing it is refused while its volume holds data; the second step says so.
    browser.click("Remove files").await;
    browser.click("Remove files").await;
    browser.find("[data-testid=service-delete-data]").await;
    service_of(&daemon, &id, "files").await;
    browser.click("Delete files and its data").await;
    browser.click("Yes: delete files and its volumes").await;
    browser
        .wait_js(
            "the files row is gone",
            "return !document.querySelector('tr[data-service=files]')",
            Duration::from_secs(120),
        )
        .await;
    daemon
        .get(
            &format!("/v1/projects/{id}/services/files"),
            &daemon.admin_token,
        )
        .await
        .expect(404);
    let names: Vec<Value> = services_of(&daemon, &id)
        .await
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("redis")]);
    browser.close().await;
}
