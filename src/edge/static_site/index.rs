//! A static site's index: every file's length, content type, validators and compressed
//! forms, made once when the release is published (`publish`, written beside the site as
//! `<site>.index/`) and read back by the edge (`load`), which keeps the small files in
//! memory and the rest as paths to stream from.
//! Invariant: what the index says about a file is what the disk held when the index was
//! loaded; a manifest that no longer matches the site (or none at all) is ignored, and the
//! compressed forms of the files held in memory are made again there.

use std::{
    collections::HashMap,
    fs::{File, Metadata},
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::header::HeaderValue;

use super::budget::{MemoryBudget, Reservation};
use crate::edge::static_files::{content_type, is_compressible, CACHE_ASSETS, CACHE_HTML};

/// Files at most this long are held in memory while the budget lasts: serving them costs
/// no system call but the socket write. Longer ones are streamed from disk.
pub const MAX_IN_MEMORY_BYTES: u64 = 1024 * 1024;
/// Files smaller than this are sent as they are: compression would save too little to be
/// worth the extra round of headers.
pub const MIN_COMPRESSIBLE_BYTES: u64 = 1024;
/// Files larger than this are sent uncompressed, since compression happens in memory.
pub const MAX_COMPRESSIBLE_BYTES: u64 = 8 * 1024 * 1024;
/// Brotli quality at publish time: it runs once per release, so nearer the maximum than
/// on-the-fly compression could afford, short of 10 and 11 whose time grows steeply.
const BROTLI_QUALITY: u32 = 9;
const BROTLI_WINDOW_BITS: u32 = 22;
const GZIP_LEVEL: u32 = 9;
/// The manifest's format; another number is not read.
const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";

/// The directory that holds `root`'s index: beside it, never inside, so no request path
/// can name it.
pub fn index_dir(root: &Path) -> PathBuf {
    let mut dir = root.as_os_str().to_owned();
    dir.push(".index");
    PathBuf::from(dir)
}

/// A content coding the edge serves a file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Gzip,
    Brotli,
}

impl Coding {
    pub fn header_value(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Coding::Gzip => "gz",
            Coding::Brotli => "br",
        }
    }

    fn compress(self, original: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Coding::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(original.len() / 3),
                    flate2::Compression::new(GZIP_LEVEL),
                );
                encoder.write_all(original)?;
                encoder.finish()
            }
            Coding::Brotli => {
                let mut encoder = brotli::CompressorWriter::new(
                    Vec::with_capacity(original.len() / 3),
                    64 * 1024,
                    BROTLI_QUALITY,
                    BROTLI_WINDOW_BITS,
                );
                encoder.write_all(original)?;
                encoder.flush()?;
                Ok(encoder.into_inner())
            }
        }
    }
}

const CODINGS: [Coding; 2] = [Coding::Gzip, Coding::Brotli];

/// Where a representation's bytes are.
#[derive(Debug, Clone)]
pub enum Body {
    Memory(Bytes),
    /// A file to open per request; `dev` and `ino` are the file the index saw, so a path
    /// swapped for another file afterwards is refused.
    Disk {
        path: PathBuf,
        dev: u64,
        ino: u64,
    },
}

/// One representation of a file: the file as it is, or one compressed form.
#[derive(Debug)]
pub struct Variant {
    pub len: u64,
    /// The entity tag, quoted, as sent.
    pub tag: HeaderValue,
    pub body: Body,
}

impl Variant {
    /// The entity tag's text, quoted (always visible ASCII: made from hex digits).
    pub fn tag_text(&self) -> &str {
        self.tag.to_str().unwrap_or_default()
    }
}

/// A file of the site, with everything its answers need, made once.
#[derive(Debug)]
pub struct IndexedFile {
    pub identity: Variant,
    pub gzip: Option<Variant>,
    pub brotli: Option<Variant>,
    pub modified: Option<SystemTime>,
    pub last_modified: Option<HeaderValue>,
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    /// Whether the file's type is one the edge compresses: its answers then vary on
    /// `Accept-Encoding`.
    pub compressible: bool,
}

impl IndexedFile {
    pub fn variant(&self, coding: Coding) -> Option<&Variant> {
        match coding {
            Coding::Gzip => self.gzip.as_ref(),
            Coding::Brotli => self.brotli.as_ref(),
        }
    }
}

/// What a path of the site names.
#[derive(Debug)]
pub enum Entry {
    File(std::sync::Arc<IndexedFile>),
    /// A directory, with its `index.html` when that is a regular file.
    Dir {
        index: Option<std::sync::Arc<IndexedFile>>,
    },
}

/// A loaded site: its paths (decoded segments joined by `/`, the root being ""), the
/// paths that are symlinks or special files (never served, nor anything below them), and
/// the memory its bodies hold.
#[derive(Debug, Default)]
pub struct Site {
    pub entries: HashMap<Box<str>, Entry>,
    pub refused: std::collections::HashSet<Box<str>>,
    /// The site's own `404.html`, when it is a regular file.
    pub not_found: Option<std::sync::Arc<IndexedFile>>,
    /// Bytes held in memory for this site, given back when it is dropped.
    pub reservation: Reservation,
}

/// What the walk found under a root.
#[derive(Debug, Default)]
struct Tree {
    files: Vec<(String, Metadata)>,
    dirs: Vec<String>,
    refused: Vec<String>,
}

/// Walks `root` without following any symlink below it (the root itself may be one: it
/// is the daemon's choice). Names that are not UTF-8 are left out, as no request can name
/// them.
fn walk(root: &Path) -> io::Result<Tree> {
    let mut tree = Tree::default();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Ok(tree),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(tree),
        Err(err) => return Err(err),
    }
    tree.dirs.push(String::new());
    let mut pending = vec![String::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(root.join(&relative))? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let child = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            let meta = entry.path().symlink_metadata()?;
            let kind = meta.file_type();
            if kind.is_dir() {
                tree.dirs.push(child.clone());
                pending.push(child);
            } else if kind.is_file() {
                tree.files.push((child, meta));
            } else {
                tree.refused.push(child);
            }
        }
    }
    Ok(tree)
}

fn mime_of(path: &str) -> mime_guess::Mime {
    mime_guess::from_path(path).first_or_octet_stream()
}

/// Whether a file of this type and length gets compressed forms.
fn wants_compression(path: &str, len: u64) -> bool {
    is_compressible(mime_of(path).essence_str())
        && (MIN_COMPRESSIBLE_BYTES..=MAX_COMPRESSIBLE_BYTES).contains(&len)
}

fn modified_nanos(meta: &Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_nanos()
}

/// A strong validator from size and modification time (to the nanosecond): any deploy
/// that changes a file changes one of them.
fn identity_tag(meta: &Metadata) -> String {
    format!("\"{:x}-{:x}\"", meta.len(), modified_nanos(meta))
}

/// The entity tag of a compressed form: each coding is a different representation, so
/// each gets its own tag.
fn coded_tag(identity_tag: &str, coding: Coding) -> String {
    let bare = identity_tag.trim_end_matches('"');
    format!("{bare}-{}\"", coding.header_value())
}

/// The manifest written at publish time.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    version: u32,
    files: Vec<ManifestFile>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ManifestFile {
    path: String,
    len: u64,
    /// Modification time in nanoseconds since the epoch, as text (JSON numbers stop short
    /// of 128 bits).
    modified_ns: String,
    /// The length of each compressed form kept in the index directory as `<n>.gz` and
    /// `<n>.br`, `n` being the file's place in this list.
    gzip: Option<u64>,
    brotli: Option<u64>,
}

/// What publishing a site's index did, for the deploy log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub files: usize,
    pub compressed: usize,
}

/// Reads a whole file, checking it is the one `walked` described (a file replaced since
/// the walk is an error, never half of one and half of another).
fn read_exact_file(path: &Path, walked: &Metadata) -> io::Result<Vec<u8>> {
    let file = open_checked(path, walked.dev(), walked.ino())?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed while it was indexed", path.display()),
        )
    })?;
    let mut bytes = Vec::with_capacity(usize::try_from(walked.len()).unwrap_or(0));
    file.take(walked.len()).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != walked.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} shrank while it was indexed", path.display()),
        ));
    }
    Ok(bytes)
}

/// Opens `path` without following a final symlink, and only if it is still the file
/// `dev`/`ino` name: `None` when it is gone or another file now.
pub fn open_checked(path: &Path, dev: u64, ino: u64) -> io::Result<Option<File>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err)
            if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ELOOP) =>
        {
            return Ok(None)
        }
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.dev() != dev || meta.ino() != ino {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Writes the index of the site at `root` into `index_dir(root)`: every compressible
/// file's gzip and brotli forms and the manifest that names them. Replaces an earlier
/// index whole (written aside, then renamed). Runs on a blocking thread.
pub fn publish(root: &Path) -> io::Result<Published> {
    let tree = walk(root)?;
    let target = index_dir(root);
    let mut scratch = target.as_os_str().to_owned();
    scratch.push(".partial");
    let scratch = PathBuf::from(scratch);
    remove_dir_if_any(&scratch)?;
    std::fs::create_dir_all(&scratch)?;
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        files: Vec::with_capacity(tree.files.len()),
    };
    let mut published = Published {
        files: tree.files.len(),
        compressed: 0,
    };
    for (number, (path, meta)) in tree.files.iter().enumerate() {
        let mut entry = ManifestFile {
            path: path.clone(),
            len: meta.len(),
            modified_ns: modified_nanos(meta).to_string(),
            gzip: None,
            brotli: None,
        };
        if wants_compression(path, meta.len()) {
            let original = read_exact_file(&root.join(path), meta)?;
            for coding in CODINGS {
                let compressed = coding.compress(&original)?;
                std::fs::write(
                    scratch.join(format!("{number}.{}", coding.extension())),
                    &compressed,
                )?;
                let len = Some(compressed.len() as u64);
                match coding {
                    Coding::Gzip => entry.gzip = len,
                    Coding::Brotli => entry.brotli = len,
                }
            }
            published.compressed += 1;
        }
        manifest.files.push(entry);
    }
    let text = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    std::fs::write(scratch.join(MANIFEST), text)?;
    remove_dir_if_any(&target)?;
    std::fs::rename(&scratch, &target)?;
    Ok(published)
}

fn remove_dir_if_any(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The manifest of `root`'s index, if there is one that describes exactly the files of
/// `tree` (same paths, lengths and modification times): otherwise the site changed since
/// it was published, or was never published with an index, and its compressed forms are
/// not trusted.
fn matching_manifest(root: &Path, tree: &Tree) -> Option<HashMap<String, (usize, ManifestFile)>> {
    let text = std::fs::read(index_dir(root).join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&text).ok()?;
    if manifest.version != MANIFEST_VERSION || manifest.files.len() != tree.files.len() {
        return None;
    }
    let by_path: HashMap<String, (usize, ManifestFile)> = manifest
        .files
        .into_iter()
        .enumerate()
        .map(|(number, file)| (file.path.clone(), (number, file)))
        .collect();
    let all_match = tree.files.iter().all(|(path, meta)| {
        by_path.get(path).is_some_and(|(_, file)| {
            file.len == meta.len() && file.modified_ns == modified_nanos(meta).to_string()
        })
    });
    all_match.then_some(by_path)
}

/// Loads the site at `root` for the edge: walks it, holds files in memory smallest first
/// while `budget` lasts, and takes the compressed forms from its index when that still
/// matches (else makes them in memory for the files held there). Runs on a
/// blocking thread, once per site.
pub fn load(root: &Path, budget: &std::sync::Arc<MemoryBudget>) -> io::Result<Site> {
    let tree = walk(root)?;
    let manifest = matching_manifest(root, &tree);
    let index = index_dir(root);
    let mut reservation = Reservation::new(budget.clone());
    let mut order: Vec<usize> = (0..tree.files.len()).collect();
    order.sort_by_key(|&n| tree.files[n].1.len());
    let mut files: HashMap<String, std::sync::Arc<IndexedFile>> =
        HashMap::with_capacity(tree.files.len());
    for n in order {
        let (path, meta) = &tree.files[n];
        let full_path = root.join(path);
        let published = manifest.as_ref().and_then(|m| m.get(path));
        let file = index_file(path, &full_path, meta, published, &index, &mut reservation)?;
        files.insert(path.clone(), std::sync::Arc::new(file));
    }
    let mut site = Site {
        not_found: files.get("404.html").cloned(),
        ..Site::default()
    };
    for dir in tree.dirs {
        let index_path = if dir.is_empty() {
            "index.html".to_owned()
        } else {
            format!("{dir}/index.html")
        };
        let index = files.get(&index_path).cloned();
        site.entries
            .insert(dir.into_boxed_str(), Entry::Dir { index });
    }
    for (path, file) in files {
        site.entries
            .insert(path.into_boxed_str(), Entry::File(file));
    }
    site.refused = tree
        .refused
        .into_iter()
        .map(String::into_boxed_str)
        .collect();
    site.reservation = reservation;
    Ok(site)
}

/// One file's entry: its headers made once, its bytes in memory when it fits the budget,
/// its compressed forms from the published index (or made now).
fn index_file(
    path: &str,
    full_path: &Path,
    meta: &Metadata,
    published: Option<&(usize, ManifestFile)>,
    index: &Path,
    reservation: &mut Reservation,
) -> io::Result<IndexedFile> {
    let len = meta.len();
    let mime = mime_of(path);
    let is_html = mime.essence_str() == "text/html";
    let compressible = wants_compression(path, len);
    let identity_text = identity_tag(meta);
    let modified = meta.modified().ok();
    let on_disk = Body::Disk {
        path: full_path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // The compressed forms' lengths, known from the index or only once made.
    let published_lengths = published.map(|(number, file)| (*number, file.gzip, file.brotli));
    let published_total = published_lengths
        .map(|(_, gzip, brotli)| gzip.unwrap_or(0) + brotli.unwrap_or(0))
        .unwrap_or(0);
    let in_memory = len <= MAX_IN_MEMORY_BYTES && reservation.take(len + published_total);
    let original = if in_memory {
        Some(read_exact_file(full_path, meta)?)
    } else {
        None
    };
    let identity_body = match (&original, in_memory) {
        (Some(bytes), true) => Body::Memory(Bytes::from(bytes.clone())),
        _ => on_disk,
    };
    let mut variants: [Option<Variant>; 2] = [None, None];
    if compressible {
        for (slot, coding) in variants.iter_mut().zip(CODINGS) {
            let tag = header_value(&coded_tag(&identity_text, coding));
            *slot = match published_lengths {
                Some((number, gzip, brotli)) => {
                    let Some(len) = (match coding {
                        Coding::Gzip => gzip,
                        Coding::Brotli => brotli,
                    }) else {
                        continue;
                    };
                    let blob = index.join(format!("{number}.{}", coding.extension()));
                    let body = if in_memory {
                        let bytes = std::fs::read(&blob)?;
                        if bytes.len() as u64 != len {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("{} is not the length its manifest says", blob.display()),
                            ));
                        }
                        Body::Memory(Bytes::from(bytes))
                    } else {
                        let meta = std::fs::symlink_metadata(&blob)?;
                        Body::Disk {
                            path: blob,
                            dev: meta.dev(),
                            ino: meta.ino(),
                        }
                    };
                    Some(Variant { len, tag, body })
                }
                None => {
                    // Without a published index the compressed forms of the files held in
                    // memory are made now, and kept when they fit the budget too; other
                    // files go as they are.
                    let Some(original) = original.as_deref() else {
                        continue;
                    };
                    let compressed = coding.compress(original)?;
                    let len = compressed.len() as u64;
                    reservation.take(len).then(|| Variant {
                        len,
                        tag,
                        body: Body::Memory(Bytes::from(compressed)),
                    })
                }
            };
        }
    }
    let [gzip, brotli] = variants;
    Ok(IndexedFile {
        identity: Variant {
            len,
            tag: header_value(&identity_text),
            body: identity_body,
        },
        gzip,
        brotli,
        modified,
        last_modified: modified.map(|time| header_value(&httpdate::fmt_http_date(time))),
        content_type: header_value(&content_type(&mime)),
        cache_control: HeaderValue::from_static(if is_html { CACHE_HTML } else { CACHE_ASSETS }),
        compressible,
    })
}

fn header_value(text: &str) -> HeaderValue {
    // Tags are hex digits and quotes, dates and content types are ASCII: never invalid.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn write(root: &Path, relative: &str, contents: impl AsRef<[u8]>) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn memory(body: &Body) -> Option<&Bytes> {
        match body {
            Body::Memory(bytes) => Some(bytes),
            Body::Disk { .. } => None,
        }
    }

    fn file<'a>(site: &'a Site, path: &str) -> &'a IndexedFile {
        match site.entries.get(path) {
            Some(Entry::File(file)) => file,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn site_dir() -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dep_1");
        let text = "function hello() { return 'hello world'; }\n".repeat(100);
        write(&root, "index.html", "<h1>home</h1>");
        write(&root, "app.js", &text);
        write(&root, "docs/index.html", "<h1>docs</h1>");
        write(&root, "docs/big.bin", vec![7u8; 2 * 1024 * 1024]);
        write(&root, "404.html", "<h1>lost</h1>");
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        (dir, root, text)
    }

    #[test]
    fn a_published_index_is_loaded_with_its_compressed_forms() {
        let (_dir, root, text) = site_dir();
        let published = publish(&root).unwrap();
        assert_eq!(
            published,
            Published {
                files: 5,
                compressed: 1
            }
        );
        let budget = Arc::new(MemoryBudget::new(64 * 1024 * 1024));
        let site = load(&root, &budget).unwrap();
        let app = file(&site, "app.js");
        assert_eq!(memory(&app.identity.body).unwrap(), text.as_bytes());
        let gzip = memory(&app.gzip.as_ref().unwrap().body).unwrap();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        let brotli = memory(&app.brotli.as_ref().unwrap().body).unwrap();
        let mut decoded = String::new();
        brotli::Decompressor::new(&brotli[..], 4096)
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        assert_eq!(
            app.gzip.as_ref().unwrap().tag_text(),
            coded_tag(app.identity.tag_text(), Coding::Gzip)
        );
        // Past the in-memory size, a file is streamed from disk.
        assert!(matches!(
            file(&site, "docs/big.bin").identity.body,
            Body::Disk { .. }
        ));
        assert!(matches!(
            site.entries.get("docs"),
            Some(Entry::Dir { index: Some(_) })
        ));
        assert!(site.refused.contains("etc"));
        assert!(site.not_found.is_some());
        assert!(budget.used() > 0);
        drop(site);
        assert_eq!(budget.used(), 0, "a dropped site gives its memory back");
    }

    #[test]
    fn a_site_changed_since_its_index_makes_its_compressed_forms_again() {
        let (_dir, root, _) = site_dir();
        publish(&root).unwrap();
        let changed = "let changed = true;\n".repeat(200);
        write(&root, "app.js", &changed);
        let budget = Arc::new(MemoryBudget::new(64 * 1024 * 1024));
        let site = load(&root, &budget).unwrap();
        let gzip = memory(&file(&site, "app.js").gzip.as_ref().unwrap().body).unwrap();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, changed, "the stale index was not used");
    }

    #[test]
    fn the_budget_keeps_the_smallest_files_in_memory() {
        let (_dir, root, _) = site_dir();
        publish(&root).unwrap();
        // Room for the three small HTML files, not for app.js (4.3 kB).
        let budget = Arc::new(MemoryBudget::new(100));
        let site = load(&root, &budget).unwrap();
        assert!(memory(&file(&site, "index.html").identity.body).is_some());
        assert!(memory(&file(&site, "app.js").identity.body).is_none());
        // Its compressed forms are still served, from the index on disk.
        assert!(matches!(
            file(&site, "app.js").gzip.as_ref().unwrap().body,
            Body::Disk { .. }
        ));
        assert!(budget.used() <= 100);

        let nothing = Arc::new(MemoryBudget::new(0));
        let site = load(&root, &nothing).unwrap();
        assert!(memory(&file(&site, "index.html").identity.body).is_none());
        assert_eq!(nothing.used(), 0);
    }
}
