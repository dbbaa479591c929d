//! State backups' copies in S3 (`[backups.s3]`): `<prefix>state/<id>.cstate`, uploaded with
//! the file's SHA-256 in the object's metadata and verified after the upload; found again
//! by `latest` (ids begin with their UTC time, so the greatest key is the newest) and
//! fetched by `download`, which checks the copy against that SHA-256.

use std::path::Path;

use crate::s3::{self, ObjectStore, S3Error};

/// The folder of state backups under the bucket's prefix.
const FOLDER: &str = "state/";
/// The archives' file extension.
pub const EXTENSION: &str = ".cstate";

/// The object key of a state backup's copy.
pub fn key_for(prefix: &str, id: &str) -> String {
    format!("{prefix}{FOLDER}{id}{EXTENSION}")
}

/// The key of the newest state backup in the bucket under `prefix`, if there is one.
pub async fn latest(store: &ObjectStore, prefix: &str) -> Result<Option<String>, S3Error> {
    let folder = format!("{prefix}{FOLDER}");
    let listed = store.list(&folder).await?;
    Ok(newest(listed.into_iter().map(|object| object.key), &folder))
}

/// The greatest key that names an archive directly in `folder`.
fn newest(keys: impl Iterator<Item = String>, folder: &str) -> Option<String> {
    keys.filter(|key| {
        key.strip_prefix(folder).is_some_and(|name| {
            name.starts_with("sb_") && name.ends_with(EXTENSION) && !name.contains('/')
        })
    })
    .max()
}

/// Uploads the archive at `path` as `key` and verifies the copy (size, SHA-256, ETag);
/// `sha256` is what the backup recorded, checked again against the file before it goes.
pub async fn upload(
    store: &ObjectStore,
    key: &str,
    path: &Path,
    sha256: &str,
) -> Result<(), String> {
    let part_size = store.part_size();
    let digest_path = path.to_owned();
    let digest = tokio::task::spawn_blocking(move || s3::digest_file(&digest_path, part_size))
        .await
        .map_err(|err| format!("internal error: {err}"))?
        .map_err(|err| format!("cannot read the archive: {err}"))?;
    if digest.sha256 != sha256 {
        return Err(
            "the archive no longer matches its recorded SHA-256 (altered or damaged); it was not uploaded"
                .to_owned(),
        );
    }
    store
        .put_file(key, path, &digest)
        .await
        .map_err(|err| err.to_string())?;
    store
        .verify(key, &digest)
        .await
        .map_err(|err| format!("verifying the upload: {err}"))?;
    Ok(())
}

/// Downloads `key` into `dest` and checks it against the SHA-256 its upload stored in the
/// object's metadata; returns that SHA-256. A copy without one, or one that differs, fails
/// (and `dest` is removed).
pub async fn download(store: &ObjectStore, key: &str, dest: &Path) -> Result<String, S3Error> {
    let head = store.head(key).await?.ok_or_else(|| {
        S3Error::Mismatch(format!(
            "there is no object `{key}` in bucket `{}`",
            store.bucket_name()
        ))
    })?;
    let expected = head.sha256.ok_or_else(|| {
        S3Error::Mismatch(format!(
            "the object `{key}` has no sha256 metadata; it was not uploaded by Cantila"
        ))
    })?;
    store.download(key, dest).await?;
    let path = dest.to_owned();
    let found = tokio::task::spawn_blocking(move || super::archive::sha256_of(&path))
        .await
        .map_err(|err| S3Error::Local(err.to_string()))?
        .map_err(|err| S3Error::Local(format!("reading the downloaded copy: {err}")))?;
    if found != expected {
        let _ = tokio::fs::remove_file(dest).await;
        return Err(S3Error::Mismatch(format!(
            "the downloaded `{key}` does not match the SHA-256 recorded at its upload"
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_archive_is_the_greatest_key_directly_in_the_folder() {
        let keys = [
            "cantila/state/sb_20261207T010000Z_a.cstate",
            "cantila/state/sb_20261207T030000Z_b.cstate",
            "cantila/state/sb_20261207T020000Z_c.cstate",
            "cantila/state/sb_20991207T020000Z_c.cstate.partial",
            "cantila/state/old/sb_20991207T020000Z_c.cstate",
            "cantila/state/zz.cstate",
        ];
        assert_eq!(
            newest(keys.iter().map(|k| k.to_string()), "cantila/state/").as_deref(),
            Some("cantila/state/sb_20261207T030000Z_b.cstate")
        );
        assert_eq!(newest(std::iter::empty(), "cantila/state/"), None);
        assert_eq!(key_for("p/", "sb_1"), "p/state/sb_1.cstate");
    }
}
