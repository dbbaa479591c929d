//! The edge's route table: which project answers each hostname and where its traffic goes,
//! swapped whole and atomically so readers never see a half-updated table.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use arc_swap::{ArcSwap, Guard};

/// Where a project's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Healthy instances of the project, proxied round-robin.
    Instances(Vec<SocketAddr>),
    /// A static site served by the edge straight from `root`. With `spa_fallback`, a
    /// missing path without an extension is answered with `/index.html`, so client-side
    /// routers work on deep links.
    Static { root: PathBuf, spa_fallback: bool },
    /// No instance can answer: the project is `building`, `failed`, `stopped` or `created`.
    /// The edge answers 503 naming the state instead of keeping the client waiting.
    Unavailable { state: String },
}

/// A container app's static assets, copied out of its image after the build: the edge
/// answers GET and HEAD for a file under `root` itself, so the app is never woken for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetMount {
    /// The release's extracted assets directory.
    pub root: PathBuf,
    /// The URL path segments the directory is served under (none for `public/`, which
    /// frameworks serve at the site's root; `static` for `static/`).
    pub url_prefix: Vec<String>,
}

/// One project's route, shared by every hostname that reaches the project.
#[derive(Debug)]
pub struct Route {
    pub project_id: String,
    /// Set on a preview's route: its requests are counted under the preview, never the
    /// project's production.
    pub preview_id: Option<String>,
    pub project_name: String,
    pub target: RouteTarget,
    /// Plain-HTTP requests (other than ACME challenges) get a 308 to https once the
    /// hostname has a certificate.
    pub https_redirect: bool,
    /// Files the edge answers before proxying to the instances, when the release has
    /// extracted assets.
    pub assets: Option<AssetMount>,
    /// The round-robin cursor over `RouteTarget::Instances`; it lives with the route so a
    /// new table starts a fresh rotation without any shared state between tables.
    next_instance: AtomicUsize,
}

impl Route {
    pub fn new(
        project_id: impl Into<String>,
        project_name: impl Into<String>,
        target: RouteTarget,
        https_redirect: bool,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            preview_id: None,
            project_name: project_name.into(),
            target,
            https_redirect,
            assets: None,
            next_instance: AtomicUsize::new(0),
        }
    }

    /// The same route, for a preview of the project.
    pub fn for_preview(mut self, preview_id: impl Into<String>) -> Self {
        self.preview_id = Some(preview_id.into());
        self
    }

    /// The same route, answering its release's asset files at the edge.
    pub fn with_assets(mut self, assets: Option<AssetMount>) -> Self {
        self.assets = assets;
        self
    }

    /// The edge's counters this route's requests go to: its preview's for a preview,
    /// else its project's.
    pub fn counters(&self, metrics: &super::EdgeMetrics) -> std::sync::Arc<super::ProjectCounters> {
        match &self.preview_id {
            Some(preview_id) => metrics.preview(&self.project_id, preview_id),
            None => metrics.project(&self.project_id),
        }
    }

    /// The index of the instance the next request starts with, advancing the rotation.
    pub(crate) fn next_instance_index(&self, instance_count: usize) -> usize {
        if instance_count == 0 {
            return 0;
        }
        // Relaxed is enough: the counter only spreads load, it orders nothing else.
        self.next_instance.fetch_add(1, Ordering::Relaxed) % instance_count
    }
}

/// Hostname → route. Hosts are stored lowercase, without port or trailing dot.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    pub by_host: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `host` (normalized as a lookup would be) for `route`. A host that does not
    /// normalize (empty, not ASCII) is ignored, since no request could ever match it.
    pub fn insert(&mut self, host: &str, route: Arc<Route>) {
        if let Some(host) = normalize_host(host) {
            self.by_host.insert(host, route);
        }
    }

    /// The route for a Host header or `:authority` value such as `App.Example.com:8080`.
    pub fn lookup(&self, host_header: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(host_header)?;
        self.by_host.get(&host)
    }
}

/// The live route table: built by the daemon, replaced whole, read without a lock.
#[derive(Debug)]
pub struct Routes(ArcSwap<RouteTable>);

impl Default for Routes {
    fn default() -> Self {
        Self::new(RouteTable::default())
    }
}

impl Routes {
    pub fn new(table: RouteTable) -> Self {
        Self(ArcSwap::from_pointee(table))
    }

    /// The current table; requests hold it for their lookup only, so a replacement is
    /// visible to the next request.
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.0.load()
    }

    /// Swaps in a new table atomically: each request sees either the old or the new one.
    pub fn replace(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }
}

/// Lowercases a Host value and drops its port and trailing dot: `Api.Example.COM.:443`
/// becomes `api.example.com`; an IPv6 literal keeps its brackets (`[::1]:80` → `[::1]`).
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.is_ascii() {
        return None;
    }
    let without_port = if raw.starts_with('[') {
        let end = raw.find(']')?;
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalize_like_lookups_expect() {
        let cases = [
            ("app.example.com", Some("app.example.com")),
            ("App.Example.COM", Some("app.example.com")),
            ("app.example.com:8080", Some("app.example.com")),
            ("app.example.com.", Some("app.example.com")),
            ("APP.example.com.:443", Some("app.example.com")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            (".", None),
            (":80", None),
            ("host:port", None),
            ("ünïcode.example", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_host(raw).as_deref(), expected, "{raw:?}");
        }
    }

    #[test]
    fn replace_swaps_the_whole_table() {
        let routes = Routes::default();
        assert!(routes.load().lookup("a.test").is_none());
        let mut table = RouteTable::new();
        let route = Arc::new(Route::new(
            "prj_a",
            "a",
            RouteTarget::Unavailable {
                state: "building".into(),
            },
            false,
        ));
        table.insert("A.Test", route);
        let before = routes.load_full_for_test();
        routes.replace(table);
        assert!(
            before.lookup("a.test").is_none(),
            "an old reader keeps its table"
        );
        let found = routes
            .load()
            .lookup("a.test:80")
            .map(|r| r.project_id.clone());
        assert_eq!(found.as_deref(), Some("prj_a"));
    }

    #[test]
    fn round_robin_cycles_through_every_instance() {
        let route = Route::new("p", "p", RouteTarget::Instances(vec![]), false);
        let picks: Vec<usize> = (0..6).map(|_| route.next_instance_index(3)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(route.next_instance_index(0), 0);
    }

    impl Routes {
        fn load_full_for_test(&self) -> Arc<RouteTable> {
            self.0.load_full()
        }
    }
}
