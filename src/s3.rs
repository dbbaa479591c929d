//! S3-compatible object storage, the only module that speaks it: every request is presigned
//! with SigV4 by rusty-s3 (which does no I/O) just before reqwest sends it, and bodies are
//! streamed from disk, never read whole into memory.
//! Invariant: no request URL (it carries the signature and the access key id) and no secret
//! appears in an error or a log line; errors say which operation failed and why.

use std::{
    io::{Read, SeekFrom},
    path::Path,
    time::Duration,
};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::{header, StatusCode};
use rusty_s3::{
    actions::{CreateMultipartUpload, ListObjectsV2},
    Bucket, Credentials, S3Action, UrlStyle,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::S3Config;

/// How long a presigned request stays valid; each is signed just before it is sent.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);
/// The most of an error answer read for its code and message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: usize = 10_000;
/// The object metadata holding the file's SHA-256 (hex), read back to verify an upload.
const SHA256_METADATA: &str = "x-amz-meta-sha256";

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the S3 endpoint {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The service answered with an error.
    #[error("S3 {operation} answered {status}{detail}")]
    Refused {
        operation: &'static str,
        status: String,
        /// ` (Code: message)` from the error body, or empty.
        detail: String,
    },
    /// The object does not match the file after its upload or download.
    #[error("{0}")]
    Mismatch(String),
    /// Reading or writing the local file.
    #[error("{0}")]
    Local(String),
}

/// What an upload is checked against: the file's size, SHA-256 and the MD5 of each part.
#[derive(Debug, Clone)]
pub struct FileDigest {
    pub size: u64,
    /// Hex.
    pub sha256: String,
    /// One per part, in order; exactly one when the file goes in a single PUT.
    part_md5s: Vec<[u8; 16]>,
    part_size: u64,
}

impl FileDigest {
    /// The ETag S3 gives the object: the MD5 of a single PUT, or the MD5 of the parts'
    /// MD5s followed by `-<parts>` for a multipart upload.
    pub fn expected_etag(&self) -> String {
        match self.part_md5s.as_slice() {
            [single] => hex::encode(single),
            parts => {
                let mut hasher = Md5::new();
                for md5 in parts {
                    hasher.update(md5);
                }
                format!("{}-{}", hex::encode(hasher.finalize()), parts.len())
            }
        }
    }

    fn part_range(&self, index: usize) -> (u64, u64) {
        let offset = index as u64 * self.part_size;
        (offset, self.part_size.min(self.size - offset))
    }
}

/// Reads a file once for its size, SHA-256 and per-part MD5s (blocking; call it off the
/// async threads). A file up to `part_size` is one part.
pub fn digest_file(path: &Path, part_size: u64) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut sha256 = Sha256::new();
    let mut part_md5s = Vec::new();
    let mut part = Md5::new();
    let (mut in_part, mut size) = (0u64, 0u64);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        let mut chunk = &buffer[..read];
        sha256.update(chunk);
        size += read as u64;
        while !chunk.is_empty() {
            let take = chunk.len().min((part_size - in_part) as usize);
            part.update(&chunk[..take]);
            in_part += take as u64;
            chunk = &chunk[take..];
            if in_part == part_size {
                part_md5s.push(finish_md5(std::mem::take(&mut part)));
                in_part = 0;
            }
        }
    }
    if in_part > 0 || part_md5s.is_empty() {
        part_md5s.push(finish_md5(part));
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(sha256.finalize()),
        part_md5s,
        part_size,
    })
}

fn finish_md5(hasher: Md5) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize());
    out
}

/// What a HEAD request tells about an object.
#[derive(Debug, Clone)]
pub struct ObjectHead {
    pub size: u64,
    /// Without quotes.
    pub etag: Option<String>,
    /// The `sha256` metadata the upload stored.
    pub sha256: Option<String>,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// A page of a listing holds at most 1000 keys of at most 1 KiB each, with some XML
/// around them.
const LIST_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A bucket and the credentials to use it.
pub struct ObjectStore {
    bucket: Bucket,
    credentials: Credentials,
    client: reqwest::Client,
    part_size: u64,
    /// `scheme://host[:port]` of the endpoint, for messages.
    endpoint: String,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// From validated settings (`S3Config::validate`).
    pub fn new(config: &S3Config) -> Result<Self, String> {
        config.validate()?;
        let endpoint = url::Url::parse(&config.endpoint).map_err(|err| err.to_string())?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let shown_endpoint = endpoint.origin().ascii_serialization();
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|err| format!("backups.s3: {err}"))?;
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone().unwrap_or_default(),
        );
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|err| format!("backups.s3: building the HTTP client: {err}"))?;
        Ok(Self {
            bucket,
            credentials,
            client,
            part_size: config.part_size_mb * 1024 * 1024,
            endpoint: shown_endpoint,
        })
    }

    /// Files up to this size go in one PUT.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    fn unreachable(&self, err: reqwest::Error) -> S3Error {
        // `without_url`: the URL holds the signature and the access key id.
        let err = err.without_url();
        let mut detail = if err.is_timeout() {
            "timed out".to_owned()
        } else {
            String::new()
        };
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(current) = source {
            let text = current.to_string();
            if !text.is_empty() && !detail.contains(&text) {
                if !detail.is_empty() {
                    detail.push_str(": ");
                }
                detail.push_str(&text);
            }
            source = current.source();
        }
        S3Error::Unreachable {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }

    /// Passes a success through; turns an error answer into `Refused` with the service's
    /// own code and message.
    async fn expect_success(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, S3Error> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_limited(response, ERROR_BODY_LIMIT).await;
        Err(refused(operation, status, &body))
    }

    /// Uploads the file as `key`: one PUT up to the part size, a multipart upload above it.
    /// Each request carries the MD5 of its bytes (`Content-MD5`), so the service refuses
    /// bytes damaged on the way; the object's metadata keeps the file's SHA-256.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        digest: &FileDigest,
    ) -> Result<(), S3Error> {
        if digest.part_md5s.len() > MAX_PARTS {
            return Err(S3Error::Local(format!(
                "the file needs {} parts, more than S3's {MAX_PARTS}; raise backups.s3.part_size_mb",
                digest.part_md5s.len()
            )));
        }
        if let [md5] = digest.part_md5s.as_slice() {
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5);
            let mut action = self.bucket.put_object(Some(&self.credentials), key);
            action.headers_mut().insert("content-md5", md5.clone());
            action
                .headers_mut()
                .insert(SHA256_METADATA, digest.sha256.clone());
            let url = action.sign(SIGNATURE_TTL);
            let body = file_section(path, 0, digest.size).await?;
            let response = self
                .client
                .put(url)
                .header("content-md5", md5)
                .header(SHA256_METADATA, &digest.sha256)
                .header(header::CONTENT_LENGTH, digest.size)
                .body(body)
                .send()
                .await
                .map_err(|err| self.unreachable(err))?;
            self.expect_success("PutObject", response).await?;
            return Ok(());
        }
        let mut create = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key);
        create
            .headers_mut()
            .insert(SHA256_METADATA, digest.sha256.clone());
        let url = create.sign(SIGNATURE_TTL);
        let response = self
            .client
            .post(url)
            .header(SHA256_METADATA, &digest.sha256)
            // Some servers answer 411 to a POST without a length, even an empty one.
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        let response = self
            .expect_success("CreateMultipartUpload", response)
            .await?;
        let text = read_limited(response, ERROR_BODY_LIMIT).await;
        let created =
            CreateMultipartUpload::parse_response(&text).map_err(|err| S3Error::Refused {
                operation: "CreateMultipartUpload",
                status: "an answer without an upload id".to_owned(),
                detail: format!(" ({err})"),
            })?;
        let upload_id = created.upload_id().to_owned();
        let outcome = self.upload_parts(key, &upload_id, path, digest).await;
        if outcome.is_err() {
            // Parts of an abandoned upload are billed until aborted; a failed abort is
            // left to the bucket's lifecycle rules.
            let abort =
                self.bucket
                    .abort_multipart_upload(Some(&self.credentials), key, &upload_id);
            if let Err(err) = self.client.delete(abort.sign(SIGNATURE_TTL)).send().await {
                tracing::warn!(key, error = %self.unreachable(err), "aborting a failed multipart upload");
            }
        }
        outcome
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        digest: &FileDigest,
    ) -> Result<(), S3Error> {
        let mut etags = Vec::with_capacity(digest.part_md5s.len());
        for (index, md5) in digest.part_md5s.iter().enumerate() {
            let (offset, length) = digest.part_range(index);
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5);
            // At most MAX_PARTS (10 000) parts, checked above, so the number fits a u16.
            let number = (index + 1) as u16;
            let mut action =
                self.bucket
                    .upload_part(Some(&self.credentials), key, number, upload_id);
            action.headers_mut().insert("content-md5", md5.clone());
            let url = action.sign(SIGNATURE_TTL);
            let body = file_section(path, offset, length).await?;
            let response = self
                .client
                .put(url)
                .header("content-md5", md5)
                .header(header::CONTENT_LENGTH, length)
                .body(body)
                .send()
                .await
                .map_err(|err| self.unreachable(err))?;
            let response = self.expect_success("UploadPart", response).await?;
            let etag = response
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| S3Error::Refused {
                    operation: "UploadPart",
                    status: "an answer without an ETag".to_owned(),
                    detail: String::new(),
                })?
                .to_owned();
            etags.push(etag);
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNATURE_TTL);
        let response = self
            .client
            .post(url)
            .body(complete.body())
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        let response = self
            .expect_success("CompleteMultipartUpload", response)
            .await?;
        let status = response.status();
        // The service may answer 200 and still report an error in the body.
        let body = read_limited(response, ERROR_BODY_LIMIT).await;
        if body.contains("<Error>") {
            return Err(refused("CompleteMultipartUpload", status, &body));
        }
        Ok(())
    }

    /// The object's size, ETag and stored SHA-256; `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectHead>, S3Error> {
        let action = self.bucket.head_object(Some(&self.credentials), key);
        let response = self
            .client
            .head(action.sign(SIGNATURE_TTL))
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.expect_success("HeadObject", response).await?;
        let text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let size = text(header::CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::Refused {
                operation: "HeadObject",
                status: "an answer without Content-Length".to_owned(),
                detail: String::new(),
            })?;
        Ok(Some(ObjectHead {
            size,
            etag: text(header::ETAG.as_str()).map(|e| e.trim_matches('"').to_owned()),
            sha256: text(SHA256_METADATA),
        }))
    }

    /// Checks the object against the file it was uploaded from: its size, the SHA-256 in
    /// its metadata, and its ETag where the service makes ETags from MD5s (it may not,
    /// e.g. with SSE-KMS; then Content-MD5 at upload is what checked the bytes).
    pub async fn verify(&self, key: &str, digest: &FileDigest) -> Result<ObjectHead, S3Error> {
        let head = self.head(key).await?.ok_or_else(|| {
            S3Error::Mismatch(format!(
                "the object `{key}` is not in bucket `{}` after its upload",
                self.bucket.name()
            ))
        })?;
        check_head(&head, digest)?;
        Ok(head)
    }

    /// Streams the object into `dest` (created or truncated) and fsyncs it; returns its size.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<u64, S3Error> {
        let action = self.bucket.get_object(Some(&self.credentials), key);
        let response = self
            .client
            .get(action.sign(SIGNATURE_TTL))
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        let mut response = self.expect_success("GetObject", response).await?;
        let local =
            |err: std::io::Error| S3Error::Local(format!("writing the downloaded copy: {err}"));
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.unreachable(err))?
        {
            file.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(local)?;
        Ok(written)
    }

    /// The keys of every object whose key begins with `prefix` (ListObjectsV2, every page),
    /// in the service's order (ascending by key).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, S3Error> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let response = self
                .client
                .get(action.sign(SIGNATURE_TTL))
                .send()
                .await
                .map_err(|err| self.unreachable(err))?;
            let response = self.expect_success("ListObjectsV2", response).await?;
            let text = read_limited(response, LIST_BODY_LIMIT).await;
            let page = ListObjectsV2::parse_response(&text).map_err(|err| S3Error::Refused {
                operation: "ListObjectsV2",
                status: "an answer that is not a listing".to_owned(),
                detail: format!(" ({err})"),
            })?;
            listed.extend(page.contents.into_iter().map(|object| ListedObject {
                key: object.key,
                size: object.size,
            }));
            match page.next_continuation_token {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                Some(_) | None => break,
            }
        }
        Ok(listed)
    }

    /// Deletes the object; one already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let action = self.bucket.delete_object(Some(&self.credentials), key);
        let response = self
            .client
            .delete(action.sign(SIGNATURE_TTL))
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.expect_success("DeleteObject", response).await?;
        Ok(())
    }
}

fn check_head(head: &ObjectHead, digest: &FileDigest) -> Result<(), S3Error> {
    if head.size != digest.size {
        return Err(S3Error::Mismatch(format!(
            "the uploaded object holds {} bytes, the backup file {}",
            head.size, digest.size
        )));
    }
    match &head.sha256 {
        Some(sha256) if sha256.eq_ignore_ascii_case(&digest.sha256) => {}
        Some(other) => {
            return Err(S3Error::Mismatch(format!(
                "the uploaded object's SHA-256 metadata is {other}, the backup file's {}",
                digest.sha256
            )))
        }
        None => {
            return Err(S3Error::Mismatch(
                "the uploaded object carries no SHA-256 metadata (x-amz-meta-sha256): the service dropped it"
                    .to_owned(),
            ))
        }
    }
    let expected = digest.expected_etag();
    if let Some(etag) = head.etag.as_deref().filter(|e| is_md5_etag(e)) {
        if !etag.eq_ignore_ascii_case(&expected) {
            return Err(S3Error::Mismatch(format!(
                "the uploaded object's ETag is {etag}, but the backup file's MD5s give {expected}"
            )));
        }
    }
    Ok(())
}

/// `<32 hex>` or `<32 hex>-<parts>`: an ETag made from MD5s.
fn is_md5_etag(etag: &str) -> bool {
    let (md5, parts) = match etag.split_once('-') {
        Some((md5, parts)) => (md5, Some(parts)),
        None => (etag, None),
    };
    md5.len() == 32
        && md5.chars().all(|c| c.is_ascii_hexdigit())
        && parts.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `length` bytes of the file from `offset`, as a streamed body.
async fn file_section(path: &Path, offset: u64, length: u64) -> Result<reqwest::Body, S3Error> {
    let local = |err: std::io::Error| S3Error::Local(format!("reading the backup file: {err}"));
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    file.seek(SeekFrom::Start(offset)).await.map_err(local)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(length), 256 * 1024);
    Ok(reqwest::Body::wrap_stream(stream))
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn refused(operation: &'static str, status: StatusCode, body: &str) -> S3Error {
    let code = xml_text(body, "Code");
    let message = xml_text(body, "Message");
    let detail = match (code, message) {
        (Some(code), Some(message)) => format!(" ({code}: {message})"),
        (Some(text), None) | (None, Some(text)) => format!(" ({text})"),
        (None, None) => String::new(),
    };
    S3Error::Refused {
        operation,
        status: status.to_string(),
        detail,
    }
}

/// The text of the first `<tag>` in an S3 error body; enough for `Code` and `Message`,
/// which hold plain text.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    let text = body[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8], part_size: u64) -> FileDigest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        digest_file(&path, part_size).unwrap()
    }

    #[test]
    fn etags_follow_s3s_single_and_multipart_forms() {
        let single = digest_of(b"hello", 4096);
        assert_eq!(single.expected_etag(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            single.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let empty = digest_of(b"", 4096);
        assert_eq!(empty.part_md5s.len(), 1);
        assert_eq!(empty.expected_etag(), "d41d8cd98f00b204e9800998ecf8427e");
        // Exactly one part's worth stays a single PUT; one byte more makes two parts.
        assert_eq!(digest_of(&[7u8; 8], 8).part_md5s.len(), 1);
        let multi = digest_of(b"abcdefghi", 4);
        assert_eq!(multi.part_md5s.len(), 3);
        assert_eq!(multi.part_range(2), (8, 1));
        let mut expected = Md5::new();
        for part in [&b"abcd"[..], b"efgh", b"i"] {
            expected.update(Md5::digest(part));
        }
        assert_eq!(
            multi.expected_etag(),
            format!("{}-3", hex::encode(expected.finalize()))
        );
    }

    #[test]
    fn a_head_is_checked_against_size_sha256_and_an_md5_etag() {
        let digest = digest_of(b"hello", 4096);
        let good = ObjectHead {
            size: 5,
            etag: Some("5d41402abc4b2a76b9719d911017c592".into()),
            sha256: Some(digest.sha256.clone()),
        };
        check_head(&good, &digest).unwrap();
        for (head, wanted) in [
            (
                ObjectHead {
                    size: 4,
                    ..good.clone()
                },
                "4 bytes",
            ),
            (
                ObjectHead {
                    sha256: Some("00".repeat(32)),
                    ..good.clone()
                },
                "SHA-256 metadata",
            ),
            (
                ObjectHead {
                    sha256: None,
                    ..good.clone()
                },
                "no SHA-256",
            ),
            (
                ObjectHead {
                    etag: Some("00000000000000000000000000000000".into()),
                    ..good.clone()
                },
                "ETag",
            ),
        ] {
            let err = check_head(&head, &digest).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
        }
        // An ETag not made from MD5s (e.g. SSE-KMS) is not compared.
        let kms = ObjectHead {
            etag: Some("opaque-etag-value".into()),
            ..good
        };
        check_head(&kms, &digest).unwrap();
    }

    #[test]
    fn error_bodies_give_their_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist &amp; never did</Message></Error>";
        let err = refused("PutObject", StatusCode::NOT_FOUND, body).to_string();
        assert_eq!(
            err,
            "S3 PutObject answered 404 Not Found (NoSuchBucket: The specified bucket does not exist & never did)"
        );
        let err = refused("HeadObject", StatusCode::FORBIDDEN, "").to_string();
        assert_eq!(err, "S3 HeadObject answered 403 Forbidden");
        assert!(is_md5_etag("5d41402abc4b2a76b9719d911017c592-12"));
        assert!(!is_md5_etag("5d41402abc4b2a76b9719d911017c592-"));
        assert!(!is_md5_etag("xyz"));
    }
}
