//! Static sites and a container app's asset files, served by the edge: path resolution
//! that never leaves the root, ETag/Last-Modified validation, single byte ranges, gzip and
//! brotli for compressible text, `index.html` for directories and an optional SPA
//! fallback. A static site is answered from its index (`static_site`), loaded once: no
//! file system call for the files it holds in memory, no blocking-pool hop for any. Asset
//! mounts are looked up on disk per request.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    fs::{File, Metadata},
    io::{self, Read, SeekFrom, Write},
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{
    body::{Bytes, Frame},
    header::{self, HeaderMap, HeaderValue},
    Method, Response, StatusCode, Uri,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    body::{empty, full, BoxError, EdgeBody},
    pages,
    routes::AssetMount,
    static_site::{
        index::{open_checked, MAX_COMPRESSIBLE_BYTES, MIN_COMPRESSIBLE_BYTES},
        Body, Coding, Entry, IndexedFile, LoadFailed, Site, Sites, Variant,
    },
};

/// `[edge] static_memory_mb`'s default, in bytes.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// The read size when streaming a static site's file from disk.
const DISK_CHUNK_BYTES: u64 = 128 * 1024;
/// Total size of compressed variants kept in memory, so a popular file is compressed once.
const COMPRESSED_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// The read size when streaming a file.
const CHUNK_BYTES: usize = 64 * 1024;
/// Brotli quality for on-the-fly compression: a fraction of the time of the maximum (11)
/// for most of its gain, and the result is cached.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW_BITS: u32 = 22;
const GZIP_LEVEL: u32 = 6;

/// `Cache-Control` for HTML: always revalidate, so a new deploy shows at once.
pub(crate) const CACHE_HTML: &str = "no-cache";
/// `Cache-Control` for other files: assets without content hashes in their names may be
/// stale for up to five minutes after a deploy, in exchange for far fewer requests.
pub(crate) const CACHE_ASSETS: &str = "public, max-age=300";

/// What percent-encoding leaves out of a path segment when the edge writes a redirect.
const SEGMENT_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A content coding the edge can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    fn header_value(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Brotli => Some("br"),
        }
    }

    /// The entity tag of this coding of a file: each coding is a different representation,
    /// so each gets its own tag.
    fn entity_tag(self, identity_tag: &str) -> String {
        match self.header_value() {
            None => identity_tag.to_owned(),
            Some(coding) => {
                let bare = identity_tag.trim_end_matches('"');
                format!("{bare}-{coding}\"")
            }
        }
    }
}

/// Why a request path was refused before touching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefusedPath {
    #[error("the path climbs out of the site with `..`")]
    Traversal,
    #[error("the path hides a separator in a percent-encoded segment")]
    EncodedSeparator,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path is not valid UTF-8")]
    NotUtf8,
}

/// Splits a request path into decoded segments, dropping empty and `.` segments. Every
/// way out of the root is refused here: `..` (also when percent-encoded), separators
/// hidden in a segment (`%2f`, `%5c`, a raw backslash) and NUL.
pub fn decode_path(raw_path: &str) -> Result<Vec<String>, RefusedPath> {
    let mut segments = Vec::new();
    for raw_segment in raw_path.split('/') {
        let bytes: Vec<u8> = percent_decode_str(raw_segment).collect();
        if bytes.contains(&b'/') || bytes.contains(&b'\\') {
            return Err(RefusedPath::EncodedSeparator);
        }
        if bytes.contains(&0) {
            return Err(RefusedPath::Nul);
        }
        let segment = String::from_utf8(bytes).map_err(|_| RefusedPath::NotUtf8)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => return Err(RefusedPath::Traversal),
            _ => segments.push(segment),
        }
    }
    Ok(segments)
}

/// What a path names inside the root, found without following any symlink.
#[derive(Debug)]
enum Found {
    File(PathBuf, Metadata),
    Directory,
    Missing,
    /// A symlink or a special file (FIFO, socket, device) on the way: never served.
    Refused,
}

/// Walks `segments` below `root` one component at a time with `symlink_metadata`, so a
/// symlink anywhere under the root (say `docs -> /etc`) stops the walk. The root itself
/// is the daemon's choice and may be a link.
fn walk(root: &Path, segments: &[String]) -> Found {
    let mut path = root.to_path_buf();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Found::Missing,
    }
    for (index, segment) in segments.iter().enumerate() {
        path.push(segment);
        let is_last = index + 1 == segments.len();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(_) => return Found::Missing,
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Found::Refused;
        } else if kind.is_dir() {
            continue;
        } else if kind.is_file() {
            return if is_last {
                Found::File(path, meta)
            } else {
                Found::Missing
            };
        } else {
            return Found::Refused;
        }
    }
    Found::Directory
}

/// A file chosen to answer a request, already open.
#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    file: File,
    meta: Metadata,
    /// 200, or 404 for the site's own `404.html`.
    status: StatusCode,
}

/// Opens a file `walk` found, keeping the status it will be served with.
fn open_found(
    path: PathBuf,
    walked: &Metadata,
    status: StatusCode,
) -> io::Result<Option<OpenFile>> {
    // A swap between `walk`'s look and the open is caught: the open file must be the one
    // walked.
    let Some(file) = open_checked(&path, walked.dev(), walked.ino())? else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    Ok(Some(OpenFile {
        path,
        file,
        meta,
        status,
    }))
}

/// Serves static sites (from their loaded indexes) and asset mounts (from disk, with an
/// in-memory cache of compressed variants shared by every mount).
#[derive(Debug)]
pub struct StaticFiles {
    sites: Sites,
    compressed: Mutex<CompressedCache>,
}

impl Default for StaticFiles {
    fn default() -> Self {
        Self::with_memory(DEFAULT_MEMORY_BYTES)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    path: PathBuf,
    entity_tag: String,
}

/// Compressed variants by file and version (the entity tag carries size, mtime and
/// coding), evicted oldest first past `COMPRESSED_CACHE_BYTES`.
#[derive(Debug, Default)]
struct CompressedCache {
    entries: HashMap<CacheKey, Bytes>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

impl CompressedCache {
    fn get(&self, key: &CacheKey) -> Option<Bytes> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: CacheKey, value: Bytes) {
        if value.len() > COMPRESSED_CACHE_BYTES / 4 || self.entries.contains_key(&key) {
            return;
        }
        self.bytes += value.len();
        self.entries.insert(key.clone(), value);
        self.order.push_back(key);
        while self.bytes > COMPRESSED_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.len();
            }
        }
    }
}

/// The parts of a request a static site looks at.
#[derive(Debug, Clone, Copy)]
pub struct StaticRequest<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
}

impl StaticFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Static sites holding at most `memory_bytes` of files in memory, all together.
    pub fn with_memory(memory_bytes: u64) -> Self {
        Self {
            sites: Sites::new(memory_bytes),
            compressed: Mutex::default(),
        }
    }

    /// The loaded static sites (their memory budget, for the daemon's figures and tests).
    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Answers `request` from the site at `root`: from its loaded index, loading it first
    /// if this is the site's first request.
    pub async fn serve(
        &self,
        root: &Path,
        spa_fallback: bool,
        request: StaticRequest<'_>,
    ) -> Response<EdgeBody> {
        if request.method != Method::GET && request.method != Method::HEAD {
            let mut response = pages::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "A static site only answers GET and HEAD.",
                request.request_id,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let raw_path = request.uri.path();
        let key = match site_key(raw_path) {
            Ok(key) => key,
            Err(refused) => {
                return pages::error(
                    StatusCode::BAD_REQUEST,
                    &format!("This path is not allowed: {refused}."),
                    request.request_id,
                )
            }
        };
        let lookup = Lookup {
            key: &key,
            trailing_slash: raw_path.ends_with('/'),
            spa_fallback,
        };
        if let Some(response) = self
            .sites
            .with_loaded(root, |site| answer_from(site, lookup, request))
        {
            return response;
        }
        match self.sites.load(root).await {
            Ok(site) => answer_from(&site, lookup, request),
            Err(LoadFailed::Missing) => pages::error(
                StatusCode::NOT_FOUND,
                "There is no file at this path.",
                request.request_id,
            ),
            Err(err) => {
                tracing::warn!(error = %err, root = %root.display(), request_id = request.request_id, "static site could not be loaded");
                internal_error(request.request_id)
            }
        }
    }

    /// Answers `request` from a container app's extracted assets when a regular file
    /// matches its path exactly, with the same validation, ranges and compression as a
    /// static site. `None` hands the request to the app: other methods, directories,
    /// paths outside the mount and anything missing, so the app keeps every route of its
    /// own (its `/`, its 404s) and only the files the edge holds never reach it.
    pub async fn serve_asset(
        &self,
        mount: &AssetMount,
        request: StaticRequest<'_>,
    ) -> Option<Response<EdgeBody>> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return None;
        }
        let raw_path = request.uri.path();
        if raw_path.ends_with('/') {
            return None;
        }
        let segments = decode_path(raw_path).ok()?;
        let relative = segments.strip_prefix(mount.url_prefix.as_slice())?.to_vec();
        if relative.is_empty() {
            return None;
        }
        let root = mount.root.clone();
        let found = tokio::task::spawn_blocking(move || match walk(&root, &relative) {
            Found::File(path, walked) => open_found(path, &walked, StatusCode::OK),
            Found::Directory | Found::Missing | Found::Refused => Ok(None),
        })
        .await;
        match found {
            Ok(Ok(Some(file))) => Some(self.respond(file, request).await),
            Ok(Ok(None)) => None,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, request_id = request.request_id, "asset could not be read; the app answers");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, request_id = request.request_id, "asset lookup failed; the app answers");
                None
            }
        }
    }

    /// Answers with an open file: 304 when the client's copy is current, else the file
    /// whole or one range of it, or compressed (once, then from the cache).
    async fn respond(&self, found: OpenFile, request: StaticRequest<'_>) -> Response<EdgeBody> {
        let OpenFile {
            path,
            file,
            meta,
            status,
        } = found;
        let mut chosen = Representation::choose(&path, &meta, status, request.headers);
        if status == StatusCode::OK && not_modified(request.headers, &chosen.tag, chosen.modified) {
            return answer(StatusCode::NOT_MODIFIED, empty(), chosen.headers);
        }
        insert(
            &mut chosen.headers,
            header::CONTENT_TYPE,
            &chosen.content_type,
        );
        if chosen.encoding == Encoding::Identity {
            respond_identity(file, chosen, request).await
        } else {
            self.respond_compressed(path, file, chosen, request).await
        }
    }

    /// The file compressed in its chosen coding, whole.
    async fn respond_compressed(
        &self,
        path: PathBuf,
        file: File,
        chosen: Representation<'_>,
        request: StaticRequest<'_>,
    ) -> Response<EdgeBody> {
        let Representation {
            status,
            size,
            encoding,
            tag,
            mut headers,
            ..
        } = chosen;
        let key = CacheKey {
            path,
            entity_tag: tag,
        };
        let compressed = match self.compressed(key, file, size, encoding).await {
            Ok(bytes) => bytes,
            Err(CompressionFailed::Io(err)) => {
                tracing::warn!(error = %err, request_id = request.request_id, "static file could not be compressed");
                return internal_error(request.request_id);
            }
            Err(CompressionFailed::Task(err)) => {
                tracing::warn!(error = %err, request_id = request.request_id, "static file compression failed");
                return internal_error(request.request_id);
            }
        };
        if let Some(coding) = encoding.header_value() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(compressed.len() as u64),
        );
        let head_only = request.method == Method::HEAD;
        answer(
            status,
            if head_only { empty() } else { full(compressed) },
            headers,
        )
    }

    /// The file's bytes in `encoding`: from the cache, or compressed on a blocking thread
    /// and cached.
    async fn compressed(
        &self,
        key: CacheKey,
        file: File,
        size: u64,
        encoding: Encoding,
    ) -> Result<Bytes, CompressionFailed> {
        if let Some(bytes) = lock_cache(&self.compressed).get(&key) {
            return Ok(bytes);
        }
        let bytes = tokio::task::spawn_blocking(move || compress(file, size, encoding)).await??;
        lock_cache(&self.compressed).insert(key, bytes.clone());
        Ok(bytes)
    }
}

/// Why a compressed variant could not be made.
#[derive(Debug, thiserror::Error)]
enum CompressionFailed {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// What is decided about a file before its body is read: the coding it is sent in, its
/// validators, the range asked for, and the headers every answer about it carries.
struct Representation<'a> {
    /// 200, or 404 for the site's own `404.html`.
    status: StatusCode,
    size: u64,
    identity_tag: String,
    /// The entity tag of the chosen coding.
    tag: String,
    modified: Option<SystemTime>,
    encoding: Encoding,
    /// The `Range` header, on a 200 only.
    range: Option<&'a str>,
    content_type: String,
    /// `ETag`, `Last-Modified`, `Cache-Control` and, for a compressible file, `Vary`.
    headers: HeaderMap,
}

impl<'a> Representation<'a> {
    fn choose(
        path: &Path,
        meta: &Metadata,
        status: StatusCode,
        request_headers: &'a HeaderMap,
    ) -> Self {
        let size = meta.len();
        let identity_tag = entity_tag(meta);
        let modified = meta.modified().ok();
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let is_html = mime.essence_str() == "text/html";
        let compressible = is_compressible(mime.essence_str())
            && (MIN_COMPRESSIBLE_BYTES..=MAX_COMPRESSIBLE_BYTES).contains(&size);
        let range = request_headers
            .get(header::RANGE)
            .and_then(|value| value.to_str().ok())
            .filter(|_| status == StatusCode::OK);
        // A range always addresses the identity bytes; compressing would change what the
        // offsets mean.
        let encoding = if compressible && range.is_none() {
            negotiate_encoding(request_headers)
        } else {
            Encoding::Identity
        };
        let tag = encoding.entity_tag(&identity_tag);

        let mut headers = HeaderMap::new();
        insert(&mut headers, header::ETAG, &tag);
        if let Some(modified) = modified {
            insert(
                &mut headers,
                header::LAST_MODIFIED,
                &httpdate::fmt_http_date(modified),
            );
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if is_html { CACHE_HTML } else { CACHE_ASSETS }),
        );
        if compressible {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        Self {
            status,
            size,
            identity_tag,
            tag,
            modified,
            encoding,
            range,
            content_type: content_type(&mime),
            headers,
        }
    }
}

/// The file as it is on disk: whole, or the one range asked for (416 when it lies
/// outside the file), streamed.
async fn respond_identity(
    file: File,
    chosen: Representation<'_>,
    request: StaticRequest<'_>,
) -> Response<EdgeBody> {
    let Representation {
        status,
        size,
        identity_tag,
        modified,
        range,
        mut headers,
        ..
    } = chosen;
    let wanted = match range {
        Some(range) if if_range_allows(request.headers, &identity_tag, modified) => {
            parse_range(range, size)
        }
        _ => ByteRange::Whole,
    };
    let (status, start, len) = match ranged(status, size, wanted, &mut headers) {
        Ok(part) => part,
        Err(()) => return answer(StatusCode::RANGE_NOT_SATISFIABLE, empty(), headers),
    };
    let body = if request.method == Method::HEAD {
        empty()
    } else {
        match stream_file(file, start, len).await {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!(error = %err, request_id = request.request_id, "static file could not be read");
                return internal_error(request.request_id);
            }
        }
    };
    answer(status, body, headers)
}

/// The site key of a request path: its decoded segments joined by `/` ("" for the root).
/// A plain path (no percent sign, backslash, empty, `.` or `..` segment) is its own key,
/// taken without decoding or allocating; any other goes through `decode_path`, which
/// refuses every way out of the root.
fn site_key(raw_path: &str) -> Result<Cow<'_, str>, RefusedPath> {
    let inner = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let plain = !inner.contains(['%', '\\'])
        && (inner.is_empty()
            || inner
                .split('/')
                .all(|segment| !matches!(segment, "" | "." | "..")));
    if plain {
        return Ok(Cow::Borrowed(inner));
    }
    decode_path(raw_path).map(|segments| Cow::Owned(segments.join("/")))
}

/// What a request asks of a site.
#[derive(Debug, Clone, Copy)]
struct Lookup<'a> {
    key: &'a str,
    trailing_slash: bool,
    spa_fallback: bool,
}

/// Answers from a loaded site: the file, a directory's `index.html` (or a redirect to the
/// directory's slashed path), the SPA's `index.html` for a missing route, else the site's
/// `404.html` or the edge's page.
fn answer_from(site: &Site, lookup: Lookup<'_>, request: StaticRequest<'_>) -> Response<EdgeBody> {
    let Lookup {
        key,
        trailing_slash,
        spa_fallback,
    } = lookup;
    let found = match site.entries.get(key) {
        Some(Entry::File(file)) if !trailing_slash => Some(file),
        // A directory asked for without its trailing slash: relative links in its
        // `index.html` only work from `/dir/`.
        Some(Entry::Dir { .. }) if !key.is_empty() && !trailing_slash => {
            let mut location = String::with_capacity(key.len() + 2);
            for segment in key.split('/') {
                location.push('/');
                location.extend(utf8_percent_encode(segment, SEGMENT_ENCODE));
            }
            location.push('/');
            if let Some(query) = request.uri.query() {
                location.push('?');
                location.push_str(query);
            }
            return redirect(&location);
        }
        Some(Entry::Dir { index }) => index.as_ref(),
        Some(Entry::File(_)) => None,
        // A symlink or special file (or a path through one) is answered as absent, never
        // with the SPA's page, so the refusal looks the same whatever the link points at.
        None if is_refused(site, key) => return not_found_page(site, request),
        None => None,
    };
    if let Some(file) = found {
        return respond_indexed(file, StatusCode::OK, request);
    }
    let looks_like_a_route = !key.rsplit('/').next().unwrap_or_default().contains('.');
    if spa_fallback && looks_like_a_route {
        if let Some(Entry::Dir { index: Some(file) }) = site.entries.get("") {
            return respond_indexed(file, StatusCode::OK, request);
        }
    }
    not_found_page(site, request)
}

/// Whether `key`, or a directory on its way, is a symlink or a special file.
fn is_refused(site: &Site, key: &str) -> bool {
    if site.refused.is_empty() {
        return false;
    }
    key.match_indices('/')
        .map(|(at, _)| &key[..at])
        .chain(std::iter::once(key))
        .any(|prefix| site.refused.contains(prefix))
}

/// The site's own `404.html` if it has one, else the edge's page.
fn not_found_page(site: &Site, request: StaticRequest<'_>) -> Response<EdgeBody> {
    match &site.not_found {
        Some(file) => respond_indexed(file, StatusCode::NOT_FOUND, request),
        None => pages::error(
            StatusCode::NOT_FOUND,
            "There is no file at this path.",
            request.request_id,
        ),
    }
}

/// Answers with an indexed file: 304 when the client's copy is current, else the file
/// whole or one range of it, or one of its compressed forms, whole.
fn respond_indexed(
    file: &IndexedFile,
    status: StatusCode,
    request: StaticRequest<'_>,
) -> Response<EdgeBody> {
    let range = request
        .headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| status == StatusCode::OK);
    // A range always addresses the identity bytes; compressing would change what the
    // offsets mean.
    let coded = if file.compressible && range.is_none() {
        let coding = match negotiate_encoding(request.headers) {
            Encoding::Identity => None,
            Encoding::Gzip => Some(Coding::Gzip),
            Encoding::Brotli => Some(Coding::Brotli),
        };
        coding.and_then(|coding| file.variant(coding).map(|variant| (coding, variant)))
    } else {
        None
    };
    let variant = coded.map_or(&file.identity, |(_, variant)| variant);
    let mut headers = HeaderMap::with_capacity(10);
    headers.insert(header::ETAG, variant.tag.clone());
    if let Some(modified) = &file.last_modified {
        headers.insert(header::LAST_MODIFIED, modified.clone());
    }
    headers.insert(header::CACHE_CONTROL, file.cache_control.clone());
    if file.compressible {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if status == StatusCode::OK && not_modified(request.headers, variant.tag_text(), file.modified)
    {
        return answer(StatusCode::NOT_MODIFIED, empty(), headers);
    }
    headers.insert(header::CONTENT_TYPE, file.content_type.clone());
    let head_only = request.method == Method::HEAD;
    if let Some((coding, variant)) = coded {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.header_value()),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(variant.len));
        return match body_of(variant, 0, variant.len, head_only) {
            Ok(body) => answer(status, body, headers),
            Err(err) => unreadable(&err, request),
        };
    }
    let size = variant.len;
    let wanted = match range {
        Some(range) if if_range_allows(request.headers, variant.tag_text(), file.modified) => {
            parse_range(range, size)
        }
        _ => ByteRange::Whole,
    };
    let (status, start, len) = match ranged(status, size, wanted, &mut headers) {
        Ok(part) => part,
        Err(()) => return answer(StatusCode::RANGE_NOT_SATISFIABLE, empty(), headers),
    };
    match body_of(variant, start, len, head_only) {
        Ok(body) => answer(status, body, headers),
        Err(err) => unreadable(&err, request),
    }
}

fn unreadable(err: &io::Error, request: StaticRequest<'_>) -> Response<EdgeBody> {
    tracing::warn!(error = %err, request_id = request.request_id, "static file could not be read");
    internal_error(request.request_id)
}

/// `len` bytes of a representation from `start`: a slice of the bytes in memory, or a
/// stream from its file, opened now and checked to be the file the index saw.
fn body_of(variant: &Variant, start: u64, len: u64, head_only: bool) -> io::Result<EdgeBody> {
    if head_only {
        return Ok(empty());
    }
    match &variant.body {
        Body::Memory(bytes) => {
            let from = usize::try_from(start).unwrap_or(usize::MAX);
            let to = usize::try_from(start + len).unwrap_or(usize::MAX);
            let part = bytes.get(from..to).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "a range outside the file")
            })?;
            Ok(full(bytes.slice_ref(part)))
        }
        Body::Disk { path, dev, ino } => {
            let file = open_checked(path, *dev, *ino)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} changed since its site was loaded", path.display()),
                )
            })?;
            Ok(read_at_stream(file, start, len))
        }
    }
}

/// Streams `len` bytes of `file` from `start` with positional reads made where the
/// response is polled: a file of a published site is read from the page cache, which
/// costs less than a hop to the blocking pool and back (nginx reads the same way without
/// its thread pool).
fn read_at_stream(file: File, start: u64, len: u64) -> EdgeBody {
    let chunks = stream::unfold((file, start, len), |(file, offset, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let want = usize::try_from(remaining.min(DISK_CHUNK_BYTES)).unwrap_or(0);
        let mut buffer = vec![0u8; want];
        let read = match file.read_at(&mut buffer, offset) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            )),
            other => other,
        };
        Some(match read {
            Ok(read) => {
                buffer.truncate(read);
                let next = (file, offset + read as u64, remaining - read as u64);
                (Ok::<_, BoxError>(Frame::data(Bytes::from(buffer))), next)
            }
            // The stream ends after the error.
            Err(err) => (Err(err.into()), (file, offset, 0)),
        })
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// What a response sends of a file of `size` identity bytes, given the range `wanted`:
/// sets `Accept-Ranges` (on a 200), `Content-Range` and `Content-Length`, and returns the
/// status, the first byte and the length; `Err` when the range lies outside the file
/// (`headers` then hold the 416's `Content-Range`).
fn ranged(
    status: StatusCode,
    size: u64,
    wanted: ByteRange,
    headers: &mut HeaderMap,
) -> Result<(StatusCode, u64, u64), ()> {
    if status == StatusCode::OK {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let (status, start, len) = match wanted {
        ByteRange::Whole => (status, 0, size),
        ByteRange::Part { start, end } => {
            insert(
                headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            insert(headers, header::CONTENT_RANGE, &format!("bytes */{size}"));
            headers.remove(header::CONTENT_TYPE);
            return Err(());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok((status, start, len))
}

fn answer(status: StatusCode, body: EdgeBody, headers: HeaderMap) -> Response<EdgeBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn lock_cache(cache: &Mutex<CompressedCache>) -> std::sync::MutexGuard<'_, CompressedCache> {
    // The cache only holds finished entries; after a panic elsewhere it is still coherent.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn redirect(location: &str) -> Response<EdgeBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    insert(response.headers_mut(), header::LOCATION, location);
    response
}

fn internal_error(request_id: &str) -> Response<EdgeBody> {
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The file could not be read.",
        request_id,
    )
}

/// A strong validator from size and modification time (to the nanosecond): any deploy
/// that changes a file changes one of them.
fn entity_tag(meta: &Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("\"{:x}-{:x}\"", meta.len(), modified.as_nanos())
}

/// `If-None-Match` (weak comparison, `*`), or else `If-Modified-Since` to the second.
fn not_modified(headers: &HeaderMap, tag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        return value.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
        });
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| httpdate::parse_http_date(value).ok());
    match (since, modified) {
        (Some(since), Some(modified)) => whole_seconds(modified) <= whole_seconds(since),
        _ => false,
    }
}

fn whole_seconds(time: SystemTime) -> Duration {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(since_epoch.as_secs())
}

/// `If-Range` lets the range through only if the client's copy is the current one.
fn if_range_allows(headers: &HeaderMap, identity_tag: &str, modified: Option<SystemTime>) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    if value.starts_with('"') {
        return value == identity_tag;
    }
    match (httpdate::parse_http_date(value), modified) {
        (Ok(date), Some(modified)) => whole_seconds(modified) == whole_seconds(date),
        _ => false,
    }
}

/// What a `Range` header asks for, against a file of a known size.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range (absent, malformed, several ranges): send the whole file.
    Whole,
    /// One satisfiable range; `end` is inclusive.
    Part { start: u64, end: u64 },
    /// A well-formed range that lies outside the file: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range. Several ranges are answered with the whole file,
/// which the standard allows and which spares a multipart body.
pub fn parse_range(header: &str, size: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return ByteRange::Whole;
        };
        if suffix == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part {
            start: size.saturating_sub(suffix),
            end: size - 1,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return ByteRange::Whole,
        }
    };
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part {
        start,
        end: end.map_or(size - 1, |end| end.min(size - 1)),
    }
}

/// Picks brotli or gzip by the client's `Accept-Encoding` q-values (brotli on a tie).
pub fn negotiate_encoding(headers: &HeaderMap) -> Encoding {
    let (mut brotli, mut gzip, mut any) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "br" => brotli = Some(quality),
                "gzip" | "x-gzip" => gzip = Some(quality),
                "*" => any = Some(quality),
                _ => {}
            }
        }
    }
    let brotli = brotli.or(any).unwrap_or(0.0);
    let gzip = gzip.or(any).unwrap_or(0.0);
    if brotli > 0.0 && brotli >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Text-like types that shrink well; images, video, archives and fonts in WOFF formats
/// are already compressed.
pub(crate) fn is_compressible(essence: &str) -> bool {
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/ld+json"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/wasm"
                | "image/svg+xml"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
        )
}

pub(crate) fn content_type(mime: &mime_guess::Mime) -> String {
    let essence = mime.essence_str();
    if essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript" | "application/json" | "image/svg+xml"
        )
    {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

/// Streams `len` bytes of `file` from `start`, one chunk at a time.
async fn stream_file(file: File, start: u64, len: u64) -> io::Result<EdgeBody> {
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    let chunks = stream::try_unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return Ok::<_, BoxError>(None);
        }
        let want = usize::try_from(remaining)
            .unwrap_or(CHUNK_BYTES)
            .min(CHUNK_BYTES);
        let mut buffer = vec![0u8; want];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            )
            .into());
        }
        buffer.truncate(read);
        Ok(Some((
            Frame::data(Bytes::from(buffer)),
            (file, remaining - read as u64),
        )))
    });
    Ok(StreamBody::new(chunks).boxed_unsync())
}

/// Reads the whole file (bounded by `MAX_COMPRESSIBLE_BYTES`) and compresses it. Runs on
/// a blocking thread.
fn compress(file: File, size: u64, encoding: Encoding) -> io::Result<Bytes> {
    let mut original = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_COMPRESSIBLE_BYTES)
        .read_to_end(&mut original)?;
    let compressed = match encoding {
        Encoding::Identity => original,
        Encoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(original.len() / 3),
                flate2::Compression::new(GZIP_LEVEL),
            );
            encoder.write_all(&original)?;
            encoder.finish()?
        }
        Encoding::Brotli => {
            let mut encoder = brotli::CompressorWriter::new(
                Vec::with_capacity(original.len() / 3),
                CHUNK_BYTES,
                BROTLI_QUALITY,
                BROTLI_WINDOW_BITS,
            );
            encoder.write_all(&original)?;
            encoder.flush()?;
            encoder.into_inner()
        }
    };
    Ok(Bytes::from(compressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let cases: &[(&str, Result<Vec<&str>, RefusedPath>)] = &[
            ("/", Ok(vec![])),
            ("/a/b.txt", Ok(vec!["a", "b.txt"])),
            ("//a/./b/", Ok(vec!["a", "b"])),
            ("/caf%C3%A9.html", Ok(vec!["café.html"])),
            ("/a%20b", Ok(vec!["a b"])),
            ("/../etc/passwd", Err(RefusedPath::Traversal)),
            ("/a/../../etc", Err(RefusedPath::Traversal)),
            ("/%2e%2e/etc/passwd", Err(RefusedPath::Traversal)),
            ("/%2E%2E/etc", Err(RefusedPath::Traversal)),
            ("/.%2e/etc", Err(RefusedPath::Traversal)),
            ("/a%2f..%2f..%2fetc", Err(RefusedPath::EncodedSeparator)),
            ("/a%2Fb", Err(RefusedPath::EncodedSeparator)),
            ("/a%5cb", Err(RefusedPath::EncodedSeparator)),
            ("/a\\b", Err(RefusedPath::EncodedSeparator)),
            ("/a%00.html", Err(RefusedPath::Nul)),
            ("/%ff", Err(RefusedPath::NotUtf8)),
        ];
        for (raw, expected) in cases {
            let expected = expected
                .clone()
                .map(|segments| segments.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(decode_path(raw), expected, "{raw}");
        }
    }

    #[test]
    fn site_keys_of_plain_paths_are_the_paths_and_others_decode() {
        let cases: &[(&str, Result<&str, RefusedPath>)] = &[
            ("/", Ok("")),
            ("/a/b.txt", Ok("a/b.txt")),
            ("/about/", Ok("about")),
            ("//a/./b/", Ok("a/b")),
            ("/caf%C3%A9.html", Ok("café.html")),
            ("/a/.", Ok("a")),
            ("/..", Err(RefusedPath::Traversal)),
            ("/a/../b", Err(RefusedPath::Traversal)),
            ("/%2e%2e/etc", Err(RefusedPath::Traversal)),
            ("/a\\b", Err(RefusedPath::EncodedSeparator)),
            ("/a%00", Err(RefusedPath::Nul)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                site_key(raw).as_deref().map_err(|refused| *refused),
                *expected,
                "{raw}"
            );
        }
    }

    #[test]
    fn ranges_parse_as_the_standard_says() {
        let cases = [
            ("bytes=0-9", 100, ByteRange::Part { start: 0, end: 9 }),
            ("bytes=90-", 100, ByteRange::Part { start: 90, end: 99 }),
            ("bytes=90-200", 100, ByteRange::Part { start: 90, end: 99 }),
            ("bytes=-10", 100, ByteRange::Part { start: 90, end: 99 }),
            ("bytes=-1000", 100, ByteRange::Part { start: 0, end: 99 }),
            ("bytes=100-", 100, ByteRange::Unsatisfiable),
            ("bytes=-0", 100, ByteRange::Unsatisfiable),
            ("bytes=0-", 0, ByteRange::Unsatisfiable),
            ("bytes=5-1", 100, ByteRange::Whole),
            ("bytes=0-1,5-6", 100, ByteRange::Whole),
            ("items=0-1", 100, ByteRange::Whole),
            ("bytes=x-1", 100, ByteRange::Whole),
        ];
        for (header, size, expected) in cases {
            assert_eq!(parse_range(header, size), expected, "{header} of {size}");
        }
    }

    #[test]
    fn accept_encoding_prefers_brotli_and_respects_q_zero() {
        let cases = [
            ("gzip, deflate, br", Encoding::Brotli),
            ("gzip", Encoding::Gzip),
            ("br;q=0, gzip", Encoding::Gzip),
            ("br;q=0.5, gzip;q=0.8", Encoding::Gzip),
            ("*", Encoding::Brotli),
            ("*;q=0", Encoding::Identity),
            ("identity", Encoding::Identity),
            ("", Encoding::Identity),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            assert_eq!(negotiate_encoding(&headers), expected, "{value}");
        }
        assert_eq!(negotiate_encoding(&HeaderMap::new()), Encoding::Identity);
    }

    #[test]
    fn variants_get_their_own_entity_tags() {
        assert_eq!(Encoding::Identity.entity_tag("\"a-b\""), "\"a-b\"");
        assert_eq!(Encoding::Gzip.entity_tag("\"a-b\""), "\"a-b-gzip\"");
        assert_eq!(Encoding::Brotli.entity_tag("\"a-b\""), "\"a-b-br\"");
    }

    #[test]
    fn walking_stops_at_symlinks_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/page.html"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("alias")).unwrap();
        let seg = |path: &str| decode_path(path).unwrap();
        assert!(matches!(
            walk(root, &seg("/sub/page.html")),
            Found::File(..)
        ));
        assert!(matches!(walk(root, &seg("/sub")), Found::Directory));
        assert!(matches!(walk(root, &seg("/passwd")), Found::Refused));
        assert!(matches!(walk(root, &seg("/etc/passwd")), Found::Refused));
        assert!(matches!(
            walk(root, &seg("/alias/page.html")),
            Found::Refused
        ));
        assert!(matches!(walk(root, &seg("/nope")), Found::Missing));
        assert!(matches!(
            walk(root, &seg("/sub/page.html/x")),
            Found::Missing
        ));
    }

    #[test]
    fn the_compressed_cache_stays_within_its_budget() {
        let mut cache = CompressedCache::default();
        let chunk = Bytes::from(vec![0u8; COMPRESSED_CACHE_BYTES / 4]);
        for n in 0..6 {
            let key = CacheKey {
                path: PathBuf::from(format!("/f{n}")),
                entity_tag: "\"t\"".into(),
            };
            cache.insert(key, chunk.clone());
        }
        assert!(cache.bytes <= COMPRESSED_CACHE_BYTES);
        assert_eq!(cache.entries.len(), 4);
        let first = CacheKey {
            path: PathBuf::from("/f0"),
            entity_tag: "\"t\"".into(),
        };
        assert!(cache.get(&first).is_none(), "the oldest entry went first");
    }

    #[test]
    fn compression_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        let text = "hello compressible world ".repeat(200);
        std::fs::write(&path, &text).unwrap();
        let size = text.len() as u64;

        let gz = compress(File::open(&path).unwrap(), size, Encoding::Gzip).unwrap();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);

        let br = compress(File::open(&path).unwrap(), size, Encoding::Brotli).unwrap();
        let mut decoded = String::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        assert!(br.len() < text.len() / 10);
    }
}
