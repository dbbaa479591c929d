//! Webhook authentication (GitHub, Gitea/Forgejo and GitLab schemes), push payloads and
//! pull (merge) request payloads.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::error::Error;
use crate::source::refs::GitRef;

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook delivery was not authenticated. The API answers 401 for all three;
/// the distinction is for the delivery log, so a user can tell a misconfigured hook
/// (missing, malformed) from a wrong secret (mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the webhook signature header is missing")]
    Missing,
    #[error("the webhook signature header is malformed")]
    Malformed,
    #[error("the webhook signature does not match")]
    Mismatch,
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex>` header against the HMAC-SHA256
/// of the raw body.
pub fn verify_github(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    verify_hex_hmac(secret, body, hex_digest)
}

/// Checks Gitea's `X-Gitea-Signature` (or Forgejo's `X-Forgejo-Signature`) header: the
/// bare hex HMAC-SHA256 of the raw body.
pub fn verify_gitea(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    verify_hex_hmac(secret, body, header)
}

/// Checks GitLab's `X-Gitlab-Token` header, which carries the secret itself.
pub fn verify_gitlab(secret: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    // Comparing MACs keyed by the secret, rather than the strings themselves, makes the
    // comparison constant-time (hmac's `verify_slice`) and independent of the length of
    // what the client sent.
    let expected = hmac_of(secret, secret)?.finalize().into_bytes();
    hmac_of(secret, header.as_bytes())?
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn verify_hex_hmac(secret: &[u8], body: &[u8], hex_digest: &str) -> Result<(), SignatureError> {
    let claimed = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if claimed.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    hmac_of(secret, body)?
        .verify_slice(&claimed)
        .map_err(|_| SignatureError::Mismatch)
}

/// An HMAC-SHA256 over `message`. An empty secret is refused as a mismatch: anyone could
/// compute signatures with it, so a hook without a secret must never authenticate.
fn hmac_of(secret: &[u8], message: &[u8]) -> Result<HmacSha256, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(message);
    Ok(mac)
}

/// The parts of a push event a deploy needs, from GitHub, Gitea/Forgejo or GitLab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The full ref that was pushed, e.g. `refs/heads/main` or `refs/tags/v1`.
    pub git_ref: String,
    /// The branch name when the ref is under `refs/heads/`.
    pub branch: Option<String>,
    /// The commit the ref now points to (lowercase hex); `None` when it was deleted.
    pub after: Option<String>,
    /// True when the push deleted the ref.
    pub deleted: bool,
}

impl PushEvent {
    pub fn parse(body: &[u8]) -> Result<PushEvent, Error> {
        let payload: Value = serde_json::from_slice(body)
            .map_err(|_| Error::BadRequest("the webhook body is not valid JSON".into()))?;
        let git_ref = payload
            .get("ref")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Invalid("the push event has no `ref` string".into()))?;
        let parsed = GitRef::parse(git_ref)?;
        let branch = parsed.full_branch().map(str::to_owned);
        if branch.is_none() && parsed.full_tag().is_none() {
            return Err(Error::Invalid(format!(
                "the push event's ref {git_ref:?} is not under refs/heads/ or refs/tags/"
            )));
        }
        // GitLab names the commit to build `checkout_sha` (for an annotated tag `after` is
        // the tag object); the others only send `after`.
        let claimed_after = ["checkout_sha", "after"]
            .iter()
            .find_map(|field| payload.get(*field).and_then(Value::as_str));
        let after_is_zero = claimed_after.is_some_and(|sha| sha.bytes().all(|b| b == b'0'));
        let deleted = payload
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || after_is_zero;
        let after = match claimed_after {
            _ if deleted => None,
            Some(sha) if is_full_sha(sha) => Some(sha.to_ascii_lowercase()),
            Some(sha) => {
                return Err(Error::Invalid(format!(
                    "the push event's `after` {sha:?} is not a full commit sha"
                )))
            }
            None => None,
        };
        Ok(PushEvent {
            git_ref: git_ref.to_owned(),
            branch,
            after,
            deleted,
        })
    }
}

/// What happened to a pull request, as far as previews care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullRequestAction {
    /// Opened, reopened, or new commits pushed: the preview is created or updated.
    Updated,
    /// Closed or merged: the preview is removed.
    Closed,
    /// Anything else (labels, edits, reviews): nothing to do. Holds the action's name.
    Other(String),
}

/// The parts of a pull request event (GitHub, Gitea/Forgejo) or merge request event
/// (GitLab) a preview needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub action: PullRequestAction,
    /// The pull request's number (GitLab: the merge request's `iid`).
    pub number: u32,
    /// The head (source) branch.
    pub branch: String,
    /// The head commit (lowercase hex), when the payload names one.
    pub head_sha: Option<String>,
    /// The head branch lives in another repository (a fork, or a fork since deleted).
    pub from_fork: bool,
}

impl PullRequestEvent {
    pub fn parse(body: &[u8]) -> Result<PullRequestEvent, Error> {
        let payload: Value = serde_json::from_slice(body)
            .map_err(|_| Error::BadRequest("the webhook body is not valid JSON".into()))?;
        let missing = |what: &str| Error::Invalid(format!("the pull request event has no {what}"));
        let str_at = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str);
        // GitLab's merge request hook keeps everything under `object_attributes`.
        let from_fork = if payload.get("object_attributes").is_some() {
            let project = |side: &str| {
                payload
                    .pointer(&format!("/object_attributes/{side}_project_id"))
                    .and_then(Value::as_u64)
            };
            matches!((project("source"), project("target")), (Some(source), Some(target)) if source != target)
        } else {
            let head_repo = payload.pointer("/pull_request/head/repo");
            let full_name = |side: &str| str_at(&format!("/pull_request/{side}/repo/full_name"));
            match (full_name("head"), full_name("base")) {
                (Some(head), Some(base)) => !head.eq_ignore_ascii_case(base),
                // GitHub sends `"repo": null` once the fork is deleted.
                _ => head_repo.is_some_and(Value::is_null),
            }
        };
        let (action, number, branch, head_sha) = if payload.get("object_attributes").is_some() {
            (
                str_at("/object_attributes/action").unwrap_or("update"),
                payload
                    .pointer("/object_attributes/iid")
                    .and_then(Value::as_u64),
                str_at("/object_attributes/source_branch"),
                str_at("/object_attributes/last_commit/id"),
            )
        } else {
            (
                str_at("/action").ok_or_else(|| missing("`action`"))?,
                payload
                    .get("number")
                    .or_else(|| payload.pointer("/pull_request/number"))
                    .and_then(Value::as_u64),
                str_at("/pull_request/head/ref"),
                str_at("/pull_request/head/sha"),
            )
        };
        let number = number
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| missing("pull request number"))?;
        let branch = branch.ok_or_else(|| missing("head branch"))?;
        // The branch must be a valid ref name before it names anything.
        GitRef::parse(branch)?;
        let head_sha = match head_sha {
            Some(sha) if is_full_sha(sha) => Some(sha.to_ascii_lowercase()),
            Some(sha) => {
                return Err(Error::Invalid(format!(
                    "the pull request's head sha {sha:?} is not a full commit sha"
                )))
            }
            None => None,
        };
        let action = match action {
            // GitHub: opened, reopened, synchronize; Gitea: synchronized; GitLab: open,
            // reopen, update.
            "opened" | "reopened" | "synchronize" | "synchronized" | "open" | "reopen"
            | "update" => PullRequestAction::Updated,
            "closed" | "close" | "merge" => PullRequestAction::Closed,
            other => PullRequestAction::Other(other.to_owned()),
        };
        Ok(PullRequestEvent {
            action,
            number,
            branch: branch.to_owned(),
            head_sha,
            from_fork,
        })
    }
}

/// Checks the commit a delivery names against the branch's head as fetched when the
/// delivery arrived. Only the head is ever deployed from a webhook: a delivery naming
/// another commit is stale (overtaken by a later push, or a replay of an old one), and a
/// force-push back to an older commit is fine, since that commit is the head. Returns the
/// head to deploy, or why the delivery is stale. `named` is `None` when the payload
/// names no commit; the head is then what it means.
pub fn confirm_head(
    branch: &str,
    named: Option<&str>,
    head: Option<&str>,
) -> Result<String, String> {
    let Some(head) = head else {
        return Err(format!(
            "the branch `{branch}` does not exist in the repository now, so the delivery is stale"
        ));
    };
    match named {
        Some(named) if !named.eq_ignore_ascii_case(head) => Err(format!(
            "the delivery names commit {} but `{branch}` is at {} now; only the branch's head is deployed, so a stale or replayed delivery is ignored",
            short(named),
            short(head)
        )),
        _ => Ok(head.to_owned()),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A full object id: 40 hex digits for SHA-1 repositories, 64 for SHA-256 ones.
fn is_full_sha(value: &str) -> bool {
    matches!(value.len(), 40 | 64) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's published example: docs.github.com, "Validating webhook deliveries".
    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_published_test_vector() {
        assert_eq!(
            verify_github(GITHUB_SECRET, GITHUB_BODY, Some(GITHUB_SIGNATURE)),
            Ok(())
        );
    }

    /// Secret, body, header, and the verdict expected.
    type Case<'a> = (
        &'a [u8],
        &'a [u8],
        Option<&'a str>,
        Result<(), SignatureError>,
    );

    #[test]
    fn github_rejections() {
        let uppercase = GITHUB_SIGNATURE.replace("757107ea", "757107EA");
        let cases: [Case<'_>; 10] = [
            (GITHUB_SECRET, GITHUB_BODY, Some(uppercase.as_str()), Ok(())),
            (
                b"It's a secret to everybody",
                GITHUB_BODY,
                Some(GITHUB_SIGNATURE),
                Err(SignatureError::Mismatch),
            ),
            (
                GITHUB_SECRET,
                b"Hello, World?",
                Some(GITHUB_SIGNATURE),
                Err(SignatureError::Mismatch),
            ),
            (
                GITHUB_SECRET,
                b"",
                Some(GITHUB_SIGNATURE),
                Err(SignatureError::Mismatch),
            ),
            (
                b"",
                GITHUB_BODY,
                Some(GITHUB_SIGNATURE),
                Err(SignatureError::Mismatch),
            ),
            (
                GITHUB_SECRET,
                GITHUB_BODY,
                None,
                Err(SignatureError::Missing),
            ),
            (
                GITHUB_SECRET,
                GITHUB_BODY,
                Some("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                Err(SignatureError::Malformed),
            ),
            (
                GITHUB_SECRET,
                GITHUB_BODY,
                Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"),
                Err(SignatureError::Malformed),
            ),
            (
                GITHUB_SECRET,
                GITHUB_BODY,
                Some("sha256=not-hex"),
                Err(SignatureError::Malformed),
            ),
            (
                GITHUB_SECRET,
                GITHUB_BODY,
                Some("sha256=757107ea"),
                Err(SignatureError::Malformed),
            ),
        ];
        for (index, (secret, body, header, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                verify_github(secret, body, header),
                expected,
                "case {index}: {header:?}"
            );
        }
    }

    #[test]
    fn gitea_bare_hex() {
        let bare = GITHUB_SIGNATURE.trim_start_matches("sha256=");
        assert_eq!(verify_gitea(GITHUB_SECRET, GITHUB_BODY, Some(bare)), Ok(()));
        assert_eq!(
            verify_gitea(b"other", GITHUB_BODY, Some(bare)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_gitea(GITHUB_SECRET, b"tampered", Some(bare)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_gitea(GITHUB_SECRET, GITHUB_BODY, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_gitea(GITHUB_SECRET, GITHUB_BODY, Some(GITHUB_SIGNATURE)),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn gitlab_token() {
        assert_eq!(verify_gitlab(b"s3cret", Some("s3cret")), Ok(()));
        assert_eq!(
            verify_gitlab(b"s3cret", Some("s3cret ")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_gitlab(b"s3cret", Some("s3cre")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_gitlab(b"s3cret", Some("S3CRET")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_gitlab(b"s3cret", None), Err(SignatureError::Missing));
        assert_eq!(
            verify_gitlab(b"s3cret", Some("")),
            Err(SignatureError::Missing)
        );
        assert_eq!(verify_gitlab(b"", Some("")), Err(SignatureError::Missing));
        assert_eq!(verify_gitlab(b"", Some("x")), Err(SignatureError::Mismatch));
    }

    const SHA_A: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    const SHA_B: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn event(git_ref: &str, branch: Option<&str>, after: Option<&str>, deleted: bool) -> PushEvent {
        PushEvent {
            git_ref: git_ref.into(),
            branch: branch.map(Into::into),
            after: after.map(Into::into),
            deleted,
        }
    }

    #[test]
    fn push_payloads() {
        let github_push = format!(
            r#"{{"ref":"refs/heads/main","before":"{ZERO}","after":"{SHA_A}","created":true,"deleted":false,"repository":{{"full_name":"acme/app"}}}}"#
        );
        let github_delete = format!(
            r#"{{"ref":"refs/heads/old","before":"{SHA_A}","after":"{ZERO}","deleted":true}}"#
        );
        let github_tag =
            format!(r#"{{"ref":"refs/tags/v1.0.0","after":"{SHA_A}","deleted":false}}"#);
        let gitea_push = format!(
            r#"{{"ref":"refs/heads/feature/x","before":"{SHA_B}","after":"{}","commits":[]}}"#,
            SHA_A.to_uppercase()
        );
        let gitlab_push = format!(
            r#"{{"object_kind":"push","ref":"refs/heads/main","before":"{SHA_B}","after":"{SHA_A}","checkout_sha":"{SHA_A}"}}"#
        );
        let gitlab_annotated_tag = format!(
            r#"{{"object_kind":"tag_push","ref":"refs/tags/v2","after":"{SHA_B}","checkout_sha":"{SHA_A}"}}"#
        );
        let gitlab_delete = format!(
            r#"{{"object_kind":"push","ref":"refs/heads/gone","after":"{ZERO}","checkout_sha":null}}"#
        );
        let cases = [
            (
                github_push,
                event("refs/heads/main", Some("main"), Some(SHA_A), false),
            ),
            (
                github_delete,
                event("refs/heads/old", Some("old"), None, true),
            ),
            (
                github_tag,
                event("refs/tags/v1.0.0", None, Some(SHA_A), false),
            ),
            (
                gitea_push,
                event(
                    "refs/heads/feature/x",
                    Some("feature/x"),
                    Some(SHA_A),
                    false,
                ),
            ),
            (
                gitlab_push,
                event("refs/heads/main", Some("main"), Some(SHA_A), false),
            ),
            (
                gitlab_annotated_tag,
                event("refs/tags/v2", None, Some(SHA_A), false),
            ),
            (
                gitlab_delete,
                event("refs/heads/gone", Some("gone"), None, true),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                PushEvent::parse(body.as_bytes()).unwrap(),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn pull_request_payloads() {
        let pr =
            |action: PullRequestAction, number, branch: &str, sha: Option<&str>| PullRequestEvent {
                action,
                number,
                branch: branch.into(),
                head_sha: sha.map(Into::into),
                from_fork: false,
            };
        let github = |action: &str| {
            format!(
                r#"{{"action":"{action}","number":7,"pull_request":{{"number":7,"head":{{"ref":"feature/x","sha":"{SHA_A}"}},"base":{{"ref":"main"}}}}}}"#
            )
        };
        let gitlab = format!(
            r#"{{"object_kind":"merge_request","object_attributes":{{"iid":3,"action":"update","source_branch":"fix","last_commit":{{"id":"{}"}}}}}}"#,
            SHA_B.to_uppercase()
        );
        let cases = [
            (
                github("opened"),
                pr(PullRequestAction::Updated, 7, "feature/x", Some(SHA_A)),
            ),
            (
                github("reopened"),
                pr(PullRequestAction::Updated, 7, "feature/x", Some(SHA_A)),
            ),
            (
                github("synchronize"),
                pr(PullRequestAction::Updated, 7, "feature/x", Some(SHA_A)),
            ),
            (
                github("synchronized"),
                pr(PullRequestAction::Updated, 7, "feature/x", Some(SHA_A)),
            ),
            (
                github("closed"),
                pr(PullRequestAction::Closed, 7, "feature/x", Some(SHA_A)),
            ),
            (
                github("labeled"),
                pr(
                    PullRequestAction::Other("labeled".into()),
                    7,
                    "feature/x",
                    Some(SHA_A),
                ),
            ),
            (
                gitlab,
                pr(PullRequestAction::Updated, 3, "fix", Some(SHA_B)),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                PullRequestEvent::parse(body.as_bytes()).unwrap(),
                expected,
                "{body}"
            );
        }
        let fork = |head: &str| {
            format!(
                r#"{{"action":"opened","number":8,"pull_request":{{"head":{{"ref":"main","sha":"{SHA_A}","repo":{head}}},"base":{{"ref":"main","repo":{{"full_name":"acme/app"}}}}}}}}"#
            )
        };
        let from_fork = |body: String| PullRequestEvent::parse(body.as_bytes()).unwrap().from_fork;
        assert!(from_fork(fork(r#"{"full_name":"mallory/app"}"#)));
        assert!(from_fork(fork("null")), "a deleted fork");
        assert!(!from_fork(fork(r#"{"full_name":"ACME/app"}"#)));
        let gitlab_fork = |source: u64| {
            format!(
                r#"{{"object_attributes":{{"iid":3,"action":"open","source_branch":"fix","source_project_id":{source},"target_project_id":5}}}}"#
            )
        };
        assert!(from_fork(gitlab_fork(9)));
        assert!(!from_fork(gitlab_fork(5)));
        let bad: [(&str, &str); 5] = [
            ("nope", "not valid JSON"),
            (r#"{"number":1}"#, "`action`"),
            (
                r#"{"action":"opened","pull_request":{"head":{"ref":"x"}}}"#,
                "number",
            ),
            (
                r#"{"action":"opened","number":1,"pull_request":{"head":{}}}"#,
                "head branch",
            ),
            (
                r#"{"action":"opened","number":1,"pull_request":{"head":{"ref":"a..b"}}}"#,
                "`..`",
            ),
        ];
        for (body, expected) in bad {
            let error = PullRequestEvent::parse(body.as_bytes()).unwrap_err();
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn bad_push_payloads() {
        let cases: [(&str, &str); 7] = [
            ("not json", "not valid JSON"),
            ("{}", "no `ref`"),
            (r#"{"ref":42}"#, "no `ref`"),
            (r#"{"ref":"refs/heads/a..b","after":"x"}"#, "`..`"),
            (
                r#"{"ref":"main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#,
                "not under refs/heads/",
            ),
            (
                r#"{"ref":"refs/heads/main","after":"6113728"}"#,
                "not a full commit sha",
            ),
            (
                r#"{"ref":"refs/heads/main","after":"zz13728f27ae82c7b1a177c8d03f9e96e0adf246"}"#,
                "not a full commit sha",
            ),
        ];
        for (body, expected) in cases {
            let error = PushEvent::parse(body.as_bytes()).unwrap_err();
            assert!(
                matches!(error, Error::Invalid(_) | Error::BadRequest(_)),
                "{body}: {error:?}"
            );
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn only_the_fetched_head_is_deployed() {
        let head = "a".repeat(40);
        let older = "b".repeat(40);
        assert_eq!(
            confirm_head("main", Some(&head), Some(&head)),
            Ok(head.clone())
        );
        assert_eq!(
            confirm_head("main", Some(&head.to_uppercase()), Some(&head)),
            Ok(head.clone())
        );
        assert_eq!(confirm_head("main", None, Some(&head)), Ok(head.clone()));
        let stale = confirm_head("main", Some(&older), Some(&head)).unwrap_err();
        assert!(
            stale.contains("bbbbbbbbbbbb") && stale.contains("aaaaaaaaaaaa"),
            "{stale}"
        );
        assert!(stale.contains("stale"), "{stale}");
        let gone = confirm_head("feature", Some(&head), None).unwrap_err();
        assert!(gone.contains("`feature` does not exist"), "{gone}");
    }
}
