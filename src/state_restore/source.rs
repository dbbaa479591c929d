//! Where a restore reads its archive from: a local file, an object in the S3 bucket of
//! `[backups.s3]`, or the newest state backup in that bucket. Parsed once from the command
//! line; nothing else ever sees the raw argument.

use std::{fmt, path::PathBuf};

/// A restore's archive, as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `.cstate` file on this machine.
    File(PathBuf),
    /// `s3://BUCKET/KEY` or `s3://BUCKET/latest`.
    S3 { bucket: String, key: S3Object },
}

/// Which object of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Object {
    /// The newest state backup under the configured prefix.
    Latest,
    /// An object by its full key.
    Key(String),
}

impl Source {
    /// `s3://BUCKET/KEY`, `s3://BUCKET/latest`, or a path. An `s3://` argument without a
    /// bucket or a key is refused with the accepted forms.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let Some(rest) = arg.strip_prefix("s3://") else {
            if arg.is_empty() {
                return Err(
                    "ARCHIVE is empty; give a file, s3://BUCKET/KEY or s3://BUCKET/latest"
                        .to_owned(),
                );
            }
            return Ok(Self::File(PathBuf::from(arg)));
        };
        let malformed =
            || format!("`{arg}` is not an S3 source; use s3://BUCKET/KEY or s3://BUCKET/latest");
        let (bucket, key) = rest.split_once('/').ok_or_else(malformed)?;
        if bucket.is_empty() || key.is_empty() || key.chars().any(char::is_control) {
            return Err(malformed());
        }
        let key = if key == "latest" {
            S3Object::Latest
        } else {
            S3Object::Key(key.to_owned())
        };
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            key,
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::S3 {
                bucket,
                key: S3Object::Latest,
            } => write!(f, "s3://{bucket}/latest"),
            Self::S3 {
                bucket,
                key: S3Object::Key(key),
            } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_or_are_refused_with_the_accepted_forms() {
        let file = |p: &str| Ok(Source::File(PathBuf::from(p)));
        let s3 = |b: &str, k: S3Object| {
            Ok(Source::S3 {
                bucket: b.to_owned(),
                key: k,
            })
        };
        let cases: [(&str, Result<Source, ()>); 8] = [
            ("backup.cstate", file("backup.cstate")),
            ("/var/tmp/x.cstate", file("/var/tmp/x.cstate")),
            ("s3://bkt/latest", s3("bkt", S3Object::Latest)),
            (
                "s3://bkt/cantila/state/sb_1.cstate",
                s3("bkt", S3Object::Key("cantila/state/sb_1.cstate".into())),
            ),
            ("s3://bkt", Err(())),
            ("s3:///key", Err(())),
            ("s3://bkt/", Err(())),
            ("", Err(())),
        ];
        for (input, expected) in cases {
            let parsed = Source::parse(input);
            match (&parsed, &expected) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{input}");
                    assert_eq!(got.to_string(), input, "{input} displays as given");
                }
                (Err(message), Err(())) => assert!(message.contains("s3://BUCKET"), "{message}"),
                _ => panic!("{input}: {parsed:?}"),
            }
        }
    }
}
