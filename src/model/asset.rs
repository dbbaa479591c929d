//! The asset index as stored: one file of a release's static assets.

/// One file of a release's assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// The URL path below the site's root, without a leading slash.
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: String,
}

impl Asset {
    /// The strong `ETag`: the content's SHA-256.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }
}
