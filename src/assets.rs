//! The static assets of a project's live release: a static site's files, or the files
//! under a container app's assets directory extracted from its image after the build.

/// One file of a release's assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// The URL path below the site's root, without a leading slash.
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: String,
}
