//! The pages the edge answers with itself: unknown host (404), project unavailable (503)
//! and its own errors (400, 404, 405, 413, 502, 504), each HTML-escaped and never cached.

use hyper::{
    header::{self, HeaderValue},
    Response, StatusCode,
};

use super::body::{full, EdgeBody};

/// The page for a host no project answers to; `{host}` is replaced, escaped.
const UNKNOWN_HOST_PAGE: &str = include_str!("../../assets/edge/unknown-host.html");
/// The page for a project with no instance to answer; `{project}` and `{state}` replaced.
const UNAVAILABLE_PAGE: &str = include_str!("../../assets/edge/unavailable.html");
/// The page for the edge's own errors.
const ERROR_PAGE: &str = include_str!("../../assets/edge/error.html");

/// How long a client is told to wait before retrying an unavailable project: long enough
/// for a build step or a restart to make progress, short enough to notice a recovery.
pub const RETRY_AFTER_SECONDS: u32 = 10;

/// 404 for a host no project answers to.
pub fn unknown_host(host: &str) -> Response<EdgeBody> {
    html(
        StatusCode::NOT_FOUND,
        UNKNOWN_HOST_PAGE.replace("{host}", &html_escape(host)),
    )
}

/// 503 naming the project and why it cannot answer (`building`, `failed`, ...).
pub fn unavailable(project_name: &str, state: &str) -> Response<EdgeBody> {
    let page = UNAVAILABLE_PAGE
        .replace("{project}", &html_escape(project_name))
        .replace("{state}", &html_escape(state));
    let mut response = html(StatusCode::SERVICE_UNAVAILABLE, page);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// One of the edge's own error pages.
pub fn error(status: StatusCode, message: &str, request_id: &str) -> Response<EdgeBody> {
    let page = ERROR_PAGE
        .replace("{status}", status.as_str())
        .replace(
            "{title}",
            &html_escape(status.canonical_reason().unwrap_or("Error")),
        )
        .replace("{message}", &html_escape(message))
        .replace("{request_id}", &html_escape(request_id));
    html(status, page)
}

fn html(status: StatusCode, page: String) -> Response<EdgeBody> {
    let mut response = Response::new(full(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response<EdgeBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn pages_escape_what_they_quote() {
        let page = text(unknown_host("<script>x</script>.example")).await;
        assert!(
            page.contains("&lt;script&gt;x&lt;/script&gt;.example"),
            "{page}"
        );
        assert!(!page.contains("<script>"));

        let response = unavailable("shop & \"co\"", "building");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "10");
        let page = text(response).await;
        assert!(page.contains("shop &amp; &quot;co&quot;"), "{page}");
        assert!(page.contains("building"));

        let page = text(error(StatusCode::BAD_GATEWAY, "no <instance>", "req_1")).await;
        assert!(page.contains("502 Bad Gateway") && page.contains("no &lt;instance&gt;"));
    }
}
