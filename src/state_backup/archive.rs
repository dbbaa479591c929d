//! The state backup archive (`<id>.cstate`): a tar of `cantila.db` (a consistent copy of
//! the store), `logs.db` (a consistent copy of the logs store, when there is one; archives
//! made before it existed have none), `installation-id`, and, only when encrypted,
//! `secret.key`, `certs/` and `config.toml`, closed by `manifest.json` (what it holds, with
//! each file's SHA-256).
//! Encrypted archives wrap the tar in `sealed`'s envelope; plain ones are a bare tar.
//! Invariant: `extract` writes only regular files under the directory it is given, and
//! succeeds only when every byte was authenticated (encrypted) and every file matches the
//! manifest's checksum, with nothing missing and nothing extra.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::StateBackupConfig;

use super::{
    sealed::{self, OpenFailure, OpeningReader, SealingWriter},
    StateBackupError,
};

/// The archive layout's version, in the manifest.
pub const FORMAT: u32 = 1;
/// The environment variable holding the passphrase; it wins over `passphrase_file`.
pub const PASSPHRASE_ENV: &str = "CANTILA_STATE_BACKUP_PASSPHRASE";
/// The shortest passphrase accepted: the archive may carry the key to every secret.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// The members' names in the archive (and in the data directory they come from).
pub const DATABASE: &str = "cantila.db";
pub const LOGS_DATABASE: &str = crate::store::logs::FILE;
pub const INSTALLATION_ID: &str = "installation-id";
pub const SECRET_KEY: &str = "secret.key";
pub const CERTS: &str = "certs";
pub const CONFIG: &str = "config.toml";
pub const MANIFEST: &str = "manifest.json";

/// What `write`'s record and CLI say about an unencrypted archive.
pub const UNENCRYPTED_NOTE: &str = "unencrypted: secret.key and certificates left out";

/// The manifest and the database copy are the only members that may be large; anything
/// else (keys, certificates, ids) is small, and a larger manifest is refused unread.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The passphrase state backups are encrypted with. Its Debug is masked, it is never
/// logged, and it is checked for a minimum length where it is made.
#[derive(Clone)]
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// A passphrase of at least `MIN_PASSPHRASE_CHARS` characters.
    pub fn new(text: impl Into<String>) -> Result<Self, StateBackupError> {
        let text = text.into();
        if text.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(StateBackupError::Passphrase(format!(
                "the state backup passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
            )));
        }
        Ok(Self(text))
    }

    /// The passphrase from `CANTILA_STATE_BACKUP_PASSPHRASE` (when set and not empty), else
    /// from `[state_backup] passphrase_file` (its first line), else none.
    pub fn from_env_or_file(config: &StateBackupConfig) -> Result<Option<Self>, StateBackupError> {
        Self::from_sources(
            std::env::var(PASSPHRASE_ENV).ok(),
            config.passphrase_file.as_deref(),
        )
    }

    /// `from_env_or_file` with the environment's value given, for tests.
    pub fn from_sources(
        env: Option<String>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, StateBackupError> {
        if let Some(text) = env.filter(|text| !text.is_empty()) {
            return Self::new(text).map(Some);
        }
        let Some(path) = file else {
            return Ok(None);
        };
        let text = fs::read_to_string(path).map_err(|err| {
            StateBackupError::Passphrase(format!(
                "state_backup.passphrase_file {}: {err}",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or_default();
        Self::new(line).map(Some).map_err(|err| {
            StateBackupError::Passphrase(format!(
                "state_backup.passphrase_file {}: {err}",
                path.display()
            ))
        })
    }

    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

/// What a state backup is made of.
#[derive(Debug, Clone)]
pub struct ArchiveInputs {
    /// The data directory: `installation-id`, `secret.key` and `certs/` are read from it.
    pub data_dir: PathBuf,
    /// A consistent copy of the store (`Store::snapshot_to`), archived as `cantila.db`.
    pub database: PathBuf,
    /// The copy's schema version (`Store::snapshot_to` returns it).
    pub schema_version: i64,
    /// A consistent copy of `logs.db` and its schema version, archived as `logs.db`; none
    /// when the data directory has no logs store yet.
    pub logs_database: Option<(PathBuf, i64)>,
    /// The text of the config file the daemon runs with, if any; archived only encrypted.
    pub config_text: Option<String>,
    pub created_at: OffsetDateTime,
}

/// `manifest.json`: what the archive holds. Fields may be added, never removed or renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub cantila_version: String,
    pub installation_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The store's schema version (`PRAGMA user_version`) in `cantila.db`.
    pub schema_version: i64,
    /// The logs store's schema version in `logs.db`; absent when the archive has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_schema_version: Option<i64>,
    pub encrypted: bool,
    /// The top-level members: `cantila.db`, `logs.db` (when there was one),
    /// `installation-id`, and when encrypted
    /// `secret.key`, `certs` (when the data directory has one) and `config.toml` (when the
    /// daemon had a config file).
    pub includes: Vec<String>,
    /// The SHA-256 (hex) of every file, by its path in the archive.
    pub files: BTreeMap<String, String>,
}

/// A written archive.
#[derive(Debug, Clone)]
pub struct ArchiveSummary {
    pub size_bytes: u64,
    /// SHA-256 (hex) of the whole archive file.
    pub sha256: String,
    pub manifest: Manifest,
}

/// Writes the archive to `out` (through a temporary name beside it, fsynced, then
/// renamed), owner-only. Encrypted with `passphrase` when given; otherwise a plain tar
/// without `secret.key`, `certs/` and `config.toml`.
pub fn write(
    out: &Path,
    inputs: &ArchiveInputs,
    passphrase: Option<&Passphrase>,
) -> Result<ArchiveSummary, StateBackupError> {
    let partial = partial_path(out);
    let result = write_partial(&partial, inputs, passphrase);
    let summary = match result {
        Ok(summary) => summary,
        Err(err) => {
            let _ = fs::remove_file(&partial);
            return Err(err);
        }
    };
    fs::rename(&partial, out).map_err(StateBackupError::io("naming the archive"))?;
    if let Some(parent) = out.parent() {
        // The rename is durable once the directory is; a failure here loses nothing.
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(summary)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn write_partial(
    partial: &Path,
    inputs: &ArchiveInputs,
    passphrase: Option<&Passphrase>,
) -> Result<ArchiveSummary, StateBackupError> {
    let writing = StateBackupError::io("writing the archive");
    let file = create_private_file(partial).map_err(&writing)?;
    let hashed = HashingWriter::new(BufWriter::new(file));
    let (hashed, manifest) = match passphrase {
        Some(passphrase) => {
            let sealing = SealingWriter::new(hashed, passphrase)?;
            let (sealing, manifest) = write_tar(sealing, inputs, true)?;
            (sealing.finish().map_err(&writing)?, manifest)
        }
        None => write_tar(hashed, inputs, false)?,
    };
    let (buffered, digest, size_bytes) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|err| writing(err.into_error()))?;
    file.sync_all().map_err(&writing)?;
    Ok(ArchiveSummary {
        size_bytes,
        sha256: digest,
        manifest,
    })
}

/// Appends the members to a tar over `out` and returns `out` after the tar's end.
fn write_tar<W: Write>(
    out: W,
    inputs: &ArchiveInputs,
    encrypted: bool,
) -> Result<(W, Manifest), StateBackupError> {
    let reading = |what: &Path| {
        let what = what.display().to_string();
        move |source| StateBackupError::Io {
            what: format!("reading {what}"),
            source,
        }
    };
    let writing = StateBackupError::io("writing the archive");
    let mut tar = tar::Builder::new(out);
    let mut files = BTreeMap::new();
    let mut includes = Vec::new();
    let mtime = u64::try_from(inputs.created_at.unix_timestamp()).unwrap_or(0);

    // The database copy may be large: streamed, and hashed on the way.
    let database = fs::File::open(&inputs.database).map_err(reading(&inputs.database))?;
    let size = database
        .metadata()
        .map_err(reading(&inputs.database))?
        .len();
    let mut hashing = HashingReader::new(BufReader::new(database));
    tar.append_data(&mut file_header(size, mtime), DATABASE, &mut hashing)
        .map_err(&writing)?;
    files.insert(DATABASE.to_owned(), hashing.hex());
    includes.push(DATABASE.to_owned());

    if let Some((logs, _)) = &inputs.logs_database {
        let file = fs::File::open(logs).map_err(reading(logs))?;
        let size = file.metadata().map_err(reading(logs))?.len();
        let mut hashing = HashingReader::new(BufReader::new(file));
        tar.append_data(&mut file_header(size, mtime), LOGS_DATABASE, &mut hashing)
            .map_err(&writing)?;
        files.insert(LOGS_DATABASE.to_owned(), hashing.hex());
        includes.push(LOGS_DATABASE.to_owned());
    }

    let id_path = inputs.data_dir.join(INSTALLATION_ID);
    let installation_id = fs::read(&id_path).map_err(reading(&id_path))?;
    append_small(
        &mut tar,
        &mut files,
        INSTALLATION_ID,
        &installation_id,
        mtime,
    )?;
    includes.push(INSTALLATION_ID.to_owned());

    if encrypted {
        let key_path = inputs.data_dir.join(SECRET_KEY);
        let key = fs::read(&key_path).map_err(reading(&key_path))?;
        append_small(&mut tar, &mut files, SECRET_KEY, &key, mtime)?;
        includes.push(SECRET_KEY.to_owned());

        let certs = inputs.data_dir.join(CERTS);
        if certs.is_dir() {
            let mut found = Vec::new();
            collect_files(&certs, Path::new(CERTS), &mut found)
                .map_err(StateBackupError::io("listing certs/"))?;
            for (source, name) in found {
                // A certificate renewed meanwhile is renamed into place, so a file read
                // whole is either the old one or the new one.
                let bytes = fs::read(&source).map_err(reading(&source))?;
                append_small(&mut tar, &mut files, &name, &bytes, mtime)?;
            }
            includes.push(CERTS.to_owned());
        }
        if let Some(text) = &inputs.config_text {
            append_small(&mut tar, &mut files, CONFIG, text.as_bytes(), mtime)?;
            includes.push(CONFIG.to_owned());
        }
    }

    let manifest = Manifest {
        format: FORMAT,
        cantila_version: env!("CARGO_PKG_VERSION").to_owned(),
        installation_id: String::from_utf8_lossy(&installation_id).trim().to_owned(),
        created_at: crate::clock::format(inputs.created_at),
        schema_version: inputs.schema_version,
        logs_schema_version: inputs.logs_database.as_ref().map(|(_, version)| *version),
        encrypted,
        includes,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|err| StateBackupError::Damaged(format!("manifest: {err}")))?;
    tar.append_data(
        &mut file_header(text.len() as u64, mtime),
        MANIFEST,
        text.as_slice(),
    )
    .map_err(&writing)?;
    let out = tar.into_inner().map_err(&writing)?;
    Ok((out, manifest))
}

fn append_small<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &mut BTreeMap<String, String>,
    name: &str,
    bytes: &[u8],
    mtime: u64,
) -> Result<(), StateBackupError> {
    tar.append_data(&mut file_header(bytes.len() as u64, mtime), name, bytes)
        .map_err(StateBackupError::io("writing the archive"))?;
    files.insert(name.to_owned(), hex::encode(Sha256::digest(bytes)));
    Ok(())
}

fn file_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header
}

/// Every regular file under `dir`, with its archive name under `prefix`, sorted so the
/// same tree makes the same archive. Symbolic links are skipped: a restore must not
/// recreate links that point outside the data directory.
fn collect_files(dir: &Path, prefix: &Path, found: &mut Vec<(PathBuf, String)>) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let file_type = entry.file_type()?;
        let name = prefix.join(entry.file_name());
        if file_type.is_dir() {
            collect_files(&entry.path(), &name, found)?;
        } else if file_type.is_file() {
            let Some(text) = name.to_str() else {
                tracing::warn!(path = %entry.path().display(), "state backup skips a file whose name is not UTF-8");
                continue;
            };
            found.push((entry.path(), text.to_owned()));
        } else {
            tracing::warn!(path = %entry.path().display(), "state backup skips what is not a regular file");
        }
    }
    Ok(())
}

/// Opens `archive`, checks it whole and writes its files under `into` (an empty directory
/// the caller made; nothing is written elsewhere). Fails with a clear error on a wrong or
/// missing passphrase, a truncated or altered file, or a file missing from, extra to or
/// differing from the manifest; what was written under `into` is then the caller's to
/// delete.
pub fn extract(
    archive: &Path,
    passphrase: Option<&Passphrase>,
    into: &Path,
) -> Result<Manifest, StateBackupError> {
    let reading = StateBackupError::io("reading the archive");
    let mut file = BufReader::new(fs::File::open(archive).map_err(&reading)?);
    let mut start = [0u8; sealed::MAGIC.len()];
    let read = read_up_to(&mut file, &mut start).map_err(&reading)?;
    let start = &start[..read];
    let prefix = io::Cursor::new(start.to_vec());
    if sealed::is_sealed(start) {
        let passphrase = passphrase.ok_or(StateBackupError::PassphraseNeeded)?;
        let mut opening = OpeningReader::new(prefix.chain(file), passphrase)?;
        let result = extract_tar(&mut opening, into);
        match (result, opening.failure()) {
            (_, Some(OpenFailure::Truncated)) => Err(StateBackupError::Damaged(
                "the file is truncated or altered (it does not end with its sealed last \
                 chunk)"
                    .to_owned(),
            )),
            (_, Some(OpenFailure::Altered)) => Err(StateBackupError::Damaged(
                "the file was altered (a chunk failed authentication)".to_owned(),
            )),
            (Ok(members), None) => verify(members, true),
            (Err(err), None) => Err(err),
        }
    } else {
        let mut plain = prefix.chain(file);
        let members = extract_tar(&mut plain, into)?;
        verify(members, false)
    }
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// What the tar held: each file's SHA-256, and the manifest's bytes.
struct Members {
    files: BTreeMap<String, String>,
    manifest: Option<Vec<u8>>,
}

fn extract_tar(reader: &mut impl Read, into: &Path) -> Result<Members, StateBackupError> {
    let damaged = |err: io::Error| StateBackupError::Damaged(format!("not a readable tar: {err}"));
    let mut members = Members {
        files: BTreeMap::new(),
        manifest: None,
    };
    {
        let mut tar = tar::Archive::new(&mut *reader);
        for entry in tar.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let name = entry
                .path()
                .map_err(damaged)?
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| StateBackupError::Damaged("a member's name is not UTF-8".into()))?;
            let relative = member_path(&name)?;
            match entry.header().entry_type() {
                tar::EntryType::Regular => {}
                tar::EntryType::Directory => continue,
                other => {
                    return Err(StateBackupError::Damaged(format!(
                        "member {name} is a {other:?}, not a regular file"
                    )))
                }
            }
            if members.files.contains_key(&name) || (name == MANIFEST && members.manifest.is_some())
            {
                return Err(StateBackupError::Damaged(format!(
                    "member {name} appears twice"
                )));
            }
            if name == MANIFEST {
                if entry.size() > MAX_MANIFEST_BYTES {
                    return Err(StateBackupError::Damaged(
                        "the manifest is too large".into(),
                    ));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(damaged)?;
                members.manifest = Some(bytes);
                continue;
            }
            let target = into.join(&relative);
            if let Some(parent) = target.parent() {
                create_private_dirs(into, parent)
                    .map_err(StateBackupError::io("creating a directory of the restore"))?;
            }
            let file = create_private_file(&target)
                .map_err(StateBackupError::io("writing a restored file"))?;
            let mut out = HashingWriter::new(BufWriter::new(file));
            io::copy(&mut entry, &mut out).map_err(damaged)?;
            let (buffered, digest, _) = out.finish();
            let file = buffered
                .into_inner()
                .map_err(|err| StateBackupError::io("writing a restored file")(err.into_error()))?;
            file.sync_all()
                .map_err(StateBackupError::io("writing a restored file"))?;
            members.files.insert(name, digest);
        }
    }
    // tar stops at its end-of-archive blocks; reading on to the file's end makes an
    // encrypted stream open its last chunk, the one that proves nothing was cut off.
    io::copy(reader, &mut io::sink()).map_err(damaged)?;
    Ok(members)
}

/// The path a member may be written to: relative, plain names only, one of the members
/// this format has.
fn member_path(name: &str) -> Result<PathBuf, StateBackupError> {
    let path = Path::new(name);
    let plain = path
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    let known = [
        DATABASE,
        LOGS_DATABASE,
        INSTALLATION_ID,
        SECRET_KEY,
        CONFIG,
        MANIFEST,
    ]
    .contains(&name)
        || path.starts_with(CERTS) && path.components().count() > 1;
    if !plain || !known {
        return Err(StateBackupError::Damaged(format!(
            "unexpected member {name:?}"
        )));
    }
    Ok(path.to_owned())
}

/// Checks the extracted files against the manifest.
fn verify(members: Members, encrypted: bool) -> Result<Manifest, StateBackupError> {
    let bytes = members
        .manifest
        .ok_or_else(|| StateBackupError::Damaged("manifest.json is missing".to_owned()))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|err| StateBackupError::Damaged(format!("manifest.json: {err}")))?;
    if manifest.format > FORMAT {
        return Err(StateBackupError::UnsupportedFormat {
            found: manifest.format,
            known: FORMAT,
        });
    }
    if manifest.encrypted != encrypted {
        return Err(StateBackupError::Damaged(format!(
            "the manifest says encrypted: {}, the file is {}",
            manifest.encrypted,
            if encrypted { "encrypted" } else { "not" }
        )));
    }
    for (name, expected) in &manifest.files {
        match members.files.get(name) {
            None => {
                return Err(StateBackupError::Damaged(format!(
                    "{name} is listed in the manifest but missing"
                )))
            }
            Some(found) if found != expected => {
                return Err(StateBackupError::Damaged(format!(
                    "{name} does not match its checksum"
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = members
        .files
        .keys()
        .find(|name| !manifest.files.contains_key(*name))
    {
        return Err(StateBackupError::Damaged(format!(
            "{extra} is not listed in the manifest"
        )));
    }
    let mut required = vec![DATABASE, INSTALLATION_ID];
    if encrypted {
        required.push(SECRET_KEY);
    }
    for name in required {
        if !manifest.includes.iter().any(|i| i == name) || !members.files.contains_key(name) {
            return Err(StateBackupError::Damaged(format!("{name} is missing")));
        }
    }
    Ok(manifest)
}

fn create_private_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` and its missing parents up to `root`, each owner-only.
fn create_private_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dirs(root, parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Counts and hashes what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        Ok(n)
    }
}

/// SHA-256 (hex) of a whole file, as `write` records it.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    let mut reader = HashingReader::new(BufReader::new(fs::File::open(path)?));
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory with every kind of member, and a stand-in database copy.
    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join(INSTALLATION_ID), "inst-123\n").unwrap();
        fs::write(root.join(SECRET_KEY), [9u8; 32]).unwrap();
        fs::create_dir_all(root.join("certs/hosts")).unwrap();
        fs::create_dir_all(root.join("certs/acme")).unwrap();
        fs::write(root.join("certs/hosts/a.example.pem"), "CERT AND KEY").unwrap();
        fs::write(root.join("certs/acme/account.key"), "ACCOUNT KEY").unwrap();
        // Larger than one sealed chunk, so the stream has several.
        let database: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        fs::write(root.join("snapshot.db"), database).unwrap();
        dir
    }

    fn inputs(root: &Path) -> ArchiveInputs {
        ArchiveInputs {
            data_dir: root.to_owned(),
            database: root.join("snapshot.db"),
            schema_version: 20,
            logs_database: None,
            config_text: Some("default_handle = \"ops\"\n".to_owned()),
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    fn passphrase() -> Passphrase {
        Passphrase::new("correct horse battery").unwrap()
    }

    fn files_under(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        collect_files(root, Path::new(""), &mut found).unwrap();
        found.into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn an_encrypted_archive_round_trips_everything() {
        let data = data_dir();
        let out = data.path().join("sb_1.cstate");
        let summary = write(&out, &inputs(data.path()), Some(&passphrase())).unwrap();
        assert_eq!(summary.size_bytes, fs::metadata(&out).unwrap().len());
        assert_eq!(summary.sha256, sha256_of(&out).unwrap());
        assert!(!partial_path(&out).exists());
        let bytes = fs::read(&out).unwrap();
        assert!(bytes.starts_with(sealed::MAGIC));
        assert!(!bytes.windows(11).any(|w| w == b"ACCOUNT KEY"));

        let into = tempfile::tempdir().unwrap();
        let manifest = extract(&out, Some(&passphrase()), into.path()).unwrap();
        assert_eq!(manifest, summary.manifest);
        assert!(manifest.encrypted);
        assert_eq!(manifest.installation_id, "inst-123");
        assert_eq!(manifest.schema_version, 20);
        assert_eq!(manifest.created_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(
            manifest.includes,
            [DATABASE, INSTALLATION_ID, SECRET_KEY, CERTS, CONFIG]
        );
        assert_eq!(
            files_under(into.path()),
            [
                "cantila.db",
                "certs/acme/account.key",
                "certs/hosts/a.example.pem",
                "config.toml",
                "installation-id",
                "secret.key"
            ]
        );
        for (extracted, original) in [
            ("cantila.db", "snapshot.db"),
            ("secret.key", "secret.key"),
            ("certs/acme/account.key", "certs/acme/account.key"),
        ] {
            assert_eq!(
                fs::read(into.path().join(extracted)).unwrap(),
                fs::read(data.path().join(original)).unwrap()
            );
        }
        assert_eq!(
            fs::read_to_string(into.path().join(CONFIG)).unwrap(),
            "default_handle = \"ops\"\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [out.clone(), into.path().join("certs/acme/account.key")] {
                let mode = fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
            let mode = fs::metadata(into.path().join("certs/acme"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn a_plain_archive_leaves_secrets_out() {
        let data = data_dir();
        let out = data.path().join("sb_2.cstate");
        let summary = write(&out, &inputs(data.path()), None).unwrap();
        assert!(!summary.manifest.encrypted);
        assert_eq!(summary.manifest.includes, [DATABASE, INSTALLATION_ID]);
        let bytes = fs::read(&out).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"ACCOUNT KEY"));
        assert!(!bytes.windows(12).any(|w| w == b"CERT AND KEY"));
        assert!(!bytes.windows(32).any(|w| w == [9u8; 32]));
        assert!(!bytes.windows(14).any(|w| w == b"default_handle"));

        // A passphrase given for a plain archive is not needed and does no harm.
        for passphrase in [None, Some(passphrase())] {
            let into = tempfile::tempdir().unwrap();
            let manifest = extract(&out, passphrase.as_ref(), into.path()).unwrap();
            assert_eq!(manifest, summary.manifest);
            assert_eq!(files_under(into.path()), ["cantila.db", "installation-id"]);
        }
    }

    /// Extracts `bytes` (written to a file) and returns the error's message.
    fn extract_error(bytes: &[u8], passphrase: Option<&Passphrase>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cstate");
        fs::write(&path, bytes).unwrap();
        let into = tempfile::tempdir().unwrap();
        extract(&path, passphrase, into.path())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn wrong_missing_passphrase_truncation_and_flipped_bytes_fail_clearly() {
        let data = data_dir();
        let out = data.path().join("sb_3.cstate");
        write(&out, &inputs(data.path()), Some(&passphrase())).unwrap();
        let bytes = fs::read(&out).unwrap();

        let wrong = Passphrase::new("not the passphrase").unwrap();
        assert_eq!(
            extract_error(&bytes, Some(&wrong)),
            "wrong passphrase: the archive was encrypted with another one"
        );
        assert!(extract_error(&bytes, None).starts_with("the archive is encrypted"));
        for cut in [bytes.len() - 1, bytes.len() / 2, 100] {
            assert_eq!(
                extract_error(&bytes[..cut], Some(&passphrase())),
                "the archive is damaged: the file is truncated or altered (it does not end with \
                 its sealed last chunk)",
                "cut at {cut}"
            );
        }
        assert!(extract_error(&bytes[..20], Some(&passphrase())).contains("truncated"));
        for at in [200, bytes.len() / 2] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert_eq!(
                extract_error(&flipped, Some(&passphrase())),
                "the archive is damaged: the file was altered (a chunk failed authentication)",
                "flipped at {at}"
            );
        }
        // In the last chunk, a flipped byte and a cut look alike to the cipher.
        let mut flipped = bytes.clone();
        let last = bytes.len() - 3;
        flipped[last] ^= 0x40;
        assert!(extract_error(&flipped, Some(&passphrase())).contains("truncated or altered"));
    }

    #[test]
    fn a_plain_archive_is_checked_against_its_manifest() {
        let data = data_dir();
        let out = data.path().join("sb_4.cstate");
        write(&out, &inputs(data.path()), None).unwrap();
        let bytes = fs::read(&out).unwrap();

        // A flipped byte inside the database copy (the first member's data).
        let mut flipped = bytes.clone();
        flipped[512 + 1000] ^= 1;
        assert_eq!(
            extract_error(&flipped, None),
            "the archive is damaged: cantila.db does not match its checksum"
        );
        // Cut before the manifest.
        assert!(extract_error(&bytes[..512 + 100_000], None).contains("damaged"));

        // A tar without the manifest, or with a member it does not list.
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_data(&mut file_header(2, 0), DATABASE, &b"db"[..])
            .unwrap();
        let missing = tar.into_inner().unwrap();
        assert_eq!(
            extract_error(&missing, None),
            "the archive is damaged: manifest.json is missing"
        );
        // tar's builder refuses `..`, so the name is written into the header by hand.
        let mut header = file_header(2, 0);
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append(&header, &b"no"[..]).unwrap();
        let escaping = tar.into_inner().unwrap();
        assert_eq!(
            extract_error(&escaping, None),
            "the archive is damaged: unexpected member \"../escape\""
        );
    }

    #[test]
    fn the_passphrase_comes_from_the_environment_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passphrase");
        fs::write(&file, "from the file here\nignored\n").unwrap();
        let check = |env: Option<&str>, file: Option<&Path>| {
            Passphrase::from_sources(env.map(str::to_owned), file)
                .map(|p| p.map(|p| p.expose().to_owned()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(None, None), Ok(None));
        assert_eq!(
            check(Some("from the environment"), Some(&file)),
            Ok(Some("from the environment".to_owned()))
        );
        assert_eq!(
            check(Some(""), Some(&file)),
            Ok(Some("from the file here".to_owned()))
        );
        assert!(check(Some("short"), None)
            .unwrap_err()
            .contains("at least 8"));
        assert!(check(None, Some(&dir.path().join("absent")))
            .unwrap_err()
            .contains("passphrase_file"));
        assert_eq!(format!("{:?}", passphrase()), "Passphrase(..)");
    }
}
