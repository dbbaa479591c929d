//! The web console: the static files of `assets/console/`, compiled into the binary and
//! served on the API listener beside `/v1`. The console is a client of the public API
//! only; this module serves files and never reads the store.
//!
//! Paths: `/assets/<file>` serves a file of the list below; the console's own routes
//! (`/`, `/sign-in`, `/projects...`, `/account...`) serve `index.html` so the browser's
//! router can draw them; any other path answers 404 with `index.html` as the body, so a
//! person sees the console's "not found" page and a program sees a real 404. `/v1/...` is
//! never served here: the API's JSON 404 stays.
//!
//! Invariant: every response carries the strict security headers below (a CSP without
//! inline scripts or styles, `nosniff`, no referrer, no framing), an ETag derived from the
//! bytes, and `Cache-Control: no-cache`, so an upgraded binary is picked up at once while
//! unchanged files cost a 304.

use std::{collections::HashMap, io::Write, sync::LazyLock};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Every file of `assets/console/`, by its path under that directory. A plain list of
/// `include_bytes!` rather than a crate that walks the directory at build time: the list
/// is short, reads as the console's table of contents, and costs no build script or
/// dependency. A unit test walks the directory and fails when the two disagree, so a new
/// file cannot be forgotten.
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../assets/console/index.html")),
    ("style.css", include_bytes!("../assets/console/style.css")),
    (
        "favicon.svg",
        include_bytes!("../assets/console/favicon.svg"),
    ),
    ("js/app.js", include_bytes!("../assets/console/js/app.js")),
    ("js/api.js", include_bytes!("../assets/console/js/api.js")),
    ("js/dom.js", include_bytes!("../assets/console/js/dom.js")),
    (
        "js/format.js",
        include_bytes!("../assets/console/js/format.js"),
    ),
    (
        "js/router.js",
        include_bytes!("../assets/console/js/router.js"),
    ),
    ("js/sse.js", include_bytes!("../assets/console/js/sse.js")),
    ("js/log.js", include_bytes!("../assets/console/js/log.js")),
    (
        "js/chart.js",
        include_bytes!("../assets/console/js/chart.js"),
    ),
    (
        "js/views/sign-in.js",
        include_bytes!("../assets/console/js/views/sign-in.js"),
    ),
    (
        "js/views/projects.js",
        include_bytes!("../assets/console/js/views/projects.js"),
    ),
    (
        "js/views/project.js",
        include_bytes!("../assets/console/js/views/project.js"),
    ),
    (
        "js/views/image.js",
        include_bytes!("../assets/console/js/views/image.js"),
    ),
    (
        "js/views/build-settings.js",
        include_bytes!("../assets/console/js/views/build-settings.js"),
    ),
    (
        "js/views/health.js",
        include_bytes!("../assets/console/js/views/health.js"),
    ),
    (
        "js/views/overview.js",
        include_bytes!("../assets/console/js/views/overview.js"),
    ),
    (
        "js/views/deploys.js",
        include_bytes!("../assets/console/js/views/deploys.js"),
    ),
    (
        "js/views/build.js",
        include_bytes!("../assets/console/js/views/build.js"),
    ),
    (
        "js/views/env.js",
        include_bytes!("../assets/console/js/views/env.js"),
    ),
    (
        "js/views/domains.js",
        include_bytes!("../assets/console/js/views/domains.js"),
    ),
    (
        "js/views/git.js",
        include_bytes!("../assets/console/js/views/git.js"),
    ),
    (
        "js/views/logs.js",
        include_bytes!("../assets/console/js/views/logs.js"),
    ),
    (
        "js/views/metrics.js",
        include_bytes!("../assets/console/js/views/metrics.js"),
    ),
    (
        "js/views/data.js",
        include_bytes!("../assets/console/js/views/data.js"),
    ),
    (
        "js/views/services.js",
        include_bytes!("../assets/console/js/views/services.js"),
    ),
    (
        "js/views/backups.js",
        include_bytes!("../assets/console/js/views/backups.js"),
    ),
    (
        "js/views/previews.js",
        include_bytes!("../assets/console/js/views/previews.js"),
    ),
    (
        "js/views/assets.js",
        include_bytes!("../assets/console/js/views/assets.js"),
    ),
    (
        "js/views/settings.js",
        include_bytes!("../assets/console/js/views/settings.js"),
    ),
    (
        "js/views/account.js",
        include_bytes!("../assets/console/js/views/account.js"),
    ),
    ("js/argv.js", include_bytes!("../assets/console/js/argv.js")),
    (
        "js/terminal.js",
        include_bytes!("../assets/console/js/terminal.js"),
    ),
    (
        "js/views/runs.js",
        include_bytes!("../assets/console/js/views/runs.js"),
    ),
    (
        "js/views/jobs.js",
        include_bytes!("../assets/console/js/views/jobs.js"),
    ),
    (
        "js/views/console.js",
        include_bytes!("../assets/console/js/views/console.js"),
    ),
    // xterm.js, as released on npm (see its README for versions and checksums). The
    // licence and README are served too: the licence asks to travel with every copy.
    (
        "vendor/xterm/xterm.mjs",
        include_bytes!("../assets/console/vendor/xterm/xterm.mjs"),
    ),
    (
        "vendor/xterm/xterm.css",
        include_bytes!("../assets/console/vendor/xterm/xterm.css"),
    ),
    (
        "vendor/xterm/addon-fit.mjs",
        include_bytes!("../assets/console/vendor/xterm/addon-fit.mjs"),
    ),
    (
        "vendor/xterm/LICENSE",
        include_bytes!("../assets/console/vendor/xterm/LICENSE"),
    ),
    (
        "vendor/xterm/README.md",
        include_bytes!("../assets/console/vendor/xterm/README.md"),
    ),
];

/// Where the files are served from; `index.html` is also served for the console's routes.
const ASSETS_PREFIX: &str = "/assets/";

/// Paths the browser's router draws. A prefix matches itself and anything below it, so
/// a new page under `/projects/<id>/` needs no change here.
const CONSOLE_ROUTES: &[&str] = &["/sign-in", "/projects", "/account"];

/// Scripts and styles come only from this origin (no inline code, no `eval`), the API is
/// the only place fetched, nothing may frame the console, and DOM sinks that parse HTML
/// from strings are refused outright (Trusted Types), so an API value can never become
/// markup.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// Smaller files are sent as they are: gzip's header would outweigh the saving.
const GZIP_ABOVE_BYTES: usize = 512;

/// A file ready to serve: its bytes, gzip copy (when it helps) and validators.
struct Served {
    content_type: &'static str,
    identity: &'static [u8],
    /// Shared, so a response clones a reference count rather than the bytes.
    gzip: Option<Bytes>,
    etag: HeaderValue,
}

/// Built on first use: hashing and compressing a few dozen kilobytes once.
static SERVED: LazyLock<HashMap<&'static str, Served>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(path, bytes)| (path, prepare(path, bytes)))
        .collect()
});

fn prepare(path: &str, bytes: &'static [u8]) -> Served {
    let content_type = content_type(path);
    let digest = Sha256::digest(bytes);
    let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let gzip = (bytes.len() > GZIP_ABOVE_BYTES)
        .then(|| gzip(bytes))
        .flatten()
        .filter(|compressed| compressed.len() < bytes.len())
        .map(Bytes::from);
    Served {
        content_type,
        identity: bytes,
        gzip,
        etag,
    }
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// The media type of a console file, by its extension (a vendored licence has none).
fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == "LICENSE" {
        return "text/plain; charset=utf-8";
    }
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        // A module script needs a JavaScript type; `.mjs` is how npm names ES modules.
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some(_) | None => "application/octet-stream",
    }
}

/// Whether the path is one the console's router draws.
fn is_console_route(path: &str) -> bool {
    path == "/"
        || CONSOLE_ROUTES.iter().any(|route| {
            path.strip_prefix(route)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// Answers a request for a path outside `/v1`.
pub fn respond(method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console serves files: only GET and HEAD are allowed here\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let (file, status) = match path.strip_prefix(ASSETS_PREFIX) {
        Some(name) => match SERVED.get(name) {
            Some(file) => (file, StatusCode::OK),
            None => return plain(StatusCode::NOT_FOUND, "no such console file\n"),
        },
        None if is_console_route(path) => (index(), StatusCode::OK),
        // The console's own page, so a person sees its navigation and "not found" view.
        None => (index(), StatusCode::NOT_FOUND),
    };
    serve(file, status, headers)
}

fn index() -> &'static Served {
    // A unit test checks the list against the directory, so index.html is always there.
    SERVED
        .get("index.html")
        .expect("index.html is in the console's file list")
}

fn serve(file: &Served, status: StatusCode, request: &HeaderMap) -> Response {
    let not_modified = status == StatusCode::OK && etag_matches(request, &file.etag);
    let gzip = file.gzip.as_ref().filter(|_| accepts_gzip(request));
    let (status, body) = match (not_modified, gzip) {
        (true, _) => (StatusCode::NOT_MODIFIED, Body::empty()),
        (false, Some(compressed)) => (status, Body::from(compressed.clone())),
        (false, None) => (status, Body::from(file.identity)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(header::ETAG, file.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        );
        if gzip.is_some() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
}

/// `If-None-Match` names this ETag (or `*`); weak comparison, as RFC 9110 asks for GET.
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(Ok(value)) = request.get(header::IF_NONE_MATCH).map(|v| v.to_str()) else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let Some(Ok(value)) = request.get(header::ACCEPT_ENCODING).map(|v| v.to_str()) else {
        return false;
    };
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|param| {
            param
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_file_list_is_exactly_the_console_directory() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/console");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "src/console.rs FILES must list every file");
    }

    #[test]
    fn every_file_has_a_known_type_and_no_inline_code() {
        for (path, bytes) in FILES {
            assert_ne!(
                content_type(path),
                "application/octet-stream",
                "{path} has no known type"
            );
            let text = std::str::from_utf8(bytes).unwrap();
            if path.ends_with(".html") {
                // The CSP refuses inline code; keep the markup honest too.
                for forbidden in ["<script>", "style=", "onclick=", "onload=", "javascript:"] {
                    assert!(!text.contains(forbidden), "{path} contains {forbidden}");
                }
            }
            if path.ends_with(".js") || path.ends_with(".mjs") {
                // Trusted Types would refuse these at run time; refuse them here first.
                for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "eval("] {
                    assert!(!text.contains(forbidden), "{path} uses {forbidden}");
                }
            }
        }
    }

    #[test]
    fn vendored_files_are_the_released_bytes_their_readme_names() {
        // The README's table is the record of what was copied from npm; a file edited in
        // place (or upgraded without updating the record) fails here.
        let readme = FILES
            .iter()
            .find(|(path, _)| *path == "vendor/xterm/README.md")
            .map(|(_, bytes)| std::str::from_utf8(bytes).unwrap())
            .unwrap();
        let mut checked = 0;
        for (path, bytes) in FILES {
            let Some(name) = path.strip_prefix("vendor/xterm/") else {
                continue;
            };
            if !name.ends_with(".mjs") && !name.ends_with(".css") {
                continue;
            }
            let digest = hex::encode(Sha256::digest(bytes));
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("README.md has no row for {name}"));
            assert!(
                row.contains(&digest),
                "{name} is not the file the README names"
            );
            checked += 1;
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn content_types_of_vendored_files() {
        assert_eq!(
            content_type("vendor/xterm/xterm.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("vendor/xterm/xterm.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(
            content_type("vendor/xterm/LICENSE"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            content_type("js/views/x.js"),
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn console_routes() {
        let check = |path: &str, expected: bool| {
            assert_eq!(is_console_route(path), expected, "{path}");
        };
        check("/", true);
        check("/sign-in", true);
        check("/projects", true);
        check("/projects/new", true);
        check("/projects/prj_x/deploys/dep_y", true);
        check("/account/tokens", true);
        check("/projectsx", false);
        check("/favicon.ico", false);
        check("/wp-admin", false);
    }

    #[test]
    fn accept_encoding() {
        let check = |value: &str, expected: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            assert_eq!(accepts_gzip(&headers), expected, "{value}");
        };
        check("gzip, deflate, br", true);
        check("br;q=1.0, gzip;q=0.5", true);
        check("gzip;q=0", false);
        check("br", false);
        check("*", true);
        check("GZIP", true);
    }

    #[test]
    fn etags_match_weakly_and_by_list() {
        let etag = HeaderValue::from_static("\"abc\"");
        let check = |value: &str, expected: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            assert_eq!(etag_matches(&headers, &etag), expected, "{value}");
        };
        check("\"abc\"", true);
        check("W/\"abc\"", true);
        check("\"x\", \"abc\"", true);
        check("*", true);
        check("\"abd\"", false);
    }
}
