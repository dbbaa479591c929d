//! Image pulls, inspection and tagging on the engine: `pull` streams the engine's progress
//! through `PullProgress`, which turns its flood of JSON messages into lines a deploy log
//! can hold (one per layer and state, download and extraction progress throttled per
//! layer, sizes in readable units).
//! Invariant: a registry's refusal reaches the caller as `PullFailed` with the registry's
//! own reason; credentials go to the engine in its auth header, never into a line.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bollard::{
    auth::DockerCredentials,
    query_parameters::{CreateImageOptions, TagImageOptions},
};
use futures_util::StreamExt;

use super::Engine;
use crate::runtime::{ImageDetails, RegistryAuth, RuntimeError};

/// How often one layer's download or extraction progress reaches the log at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Engine {
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), RuntimeError> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_owned()),
            ..Default::default()
        };
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        });
        let mut stream = self.client.create_image(Some(options), None, credentials);
        let mut progress = PullProgress::default();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(RuntimeError::PullFailed(error.trim().to_owned()));
                }
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(RuntimeError::PullFailed(message.trim().to_owned()));
                }
                Err(err) => return Err(err.into()),
            };
            if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
                return Err(RuntimeError::PullFailed(error.trim().to_owned()));
            }
            let (current, total) = info
                .progress_detail
                .map(|d| (d.current, d.total))
                .unwrap_or_default();
            if let Some(line) = progress.line(
                info.id.as_deref(),
                info.status.as_deref().unwrap_or_default(),
                current,
                total,
                Instant::now(),
            ) {
                on_line(&line);
            }
        }
        Ok(())
    }

    pub async fn image_details(
        &self,
        reference: &str,
    ) -> Result<Option<ImageDetails>, RuntimeError> {
        let image = match self.client.inspect_image(reference).await {
            Ok(image) => image,
            Err(err) => {
                return match RuntimeError::from(err) {
                    RuntimeError::NotFound(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let config = image.config.unwrap_or_default();
        let mut exposed_ports: Vec<u16> = config
            .exposed_ports
            .unwrap_or_default()
            .keys()
            .filter_map(|port| {
                let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                (protocol == "tcp").then(|| number.parse().ok()).flatten()
            })
            .collect();
        exposed_ports.sort_unstable();
        exposed_ports.dedup();
        Ok(Some(ImageDetails {
            id: image.id.unwrap_or_default(),
            repo_digests: image.repo_digests.unwrap_or_default(),
            exposed_ports,
            healthcheck: config
                .healthcheck
                .and_then(|check| check.test)
                .filter(|test| !test.is_empty() && test[0] != "NONE"),
            user: config.user.unwrap_or_default(),
            workdir: config
                .working_dir
                .filter(|dir| !dir.is_empty())
                .unwrap_or_else(|| "/".to_owned()),
        }))
    }

    pub async fn tag_image(&self, reference: &str, tag: &str) -> Result<(), RuntimeError> {
        let (repo, tag) = split_tag(tag);
        self.client
            .tag_image(
                reference,
                Some(TagImageOptions {
                    repo: Some(repo.to_owned()),
                    tag: Some(tag.to_owned()),
                }),
            )
            .await?;
        Ok(())
    }
}

/// `repository:tag` split at the tag's colon (a colon before the last slash is a port).
fn split_tag(reference: &str) -> (&str, &str) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Turns the engine's pull messages into log lines: a layer's state changes are each a
/// line; its download and extraction progress a line at most every `PROGRESS_EVERY`;
/// messages without a layer (the digest, the summary) pass as they are.
#[derive(Debug, Default)]
struct PullProgress {
    layers: HashMap<String, LayerState>,
}

#[derive(Debug)]
struct LayerState {
    status: String,
    reported_at: Instant,
    total: Option<i64>,
}

impl PullProgress {
    fn line(
        &mut self,
        id: Option<&str>,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
        now: Instant,
    ) -> Option<String> {
        let status = status.trim();
        if status.is_empty() {
            return None;
        }
        // Messages about the image as a whole carry its tag or no id, and no sizes.
        let Some(id) = id.filter(|id| is_layer_id(id)) else {
            return Some(match id {
                Some(id) => format!("{id}: {status}"),
                None => status.to_owned(),
            });
        };
        let total = total.filter(|t| *t > 0);
        let in_progress = matches!(status, "Downloading" | "Extracting");
        let state = self.layers.entry(id.to_owned()).or_insert(LayerState {
            status: String::new(),
            reported_at: now,
            total: None,
        });
        if total.is_some() {
            state.total = total;
        }
        let changed = state.status != status;
        let progress_due = in_progress && now.duration_since(state.reported_at) >= PROGRESS_EVERY;
        if !(changed || progress_due) {
            return None;
        }
        state.status = status.to_owned();
        state.reported_at = now;
        let size = match (in_progress, current, state.total) {
            (true, Some(current), Some(total)) => {
                format!(" {} / {}", human_bytes(current), human_bytes(total))
            }
            (_, _, Some(total)) => format!(" ({})", human_bytes(total)),
            _ => String::new(),
        };
        Some(format!("layer {id}: {}{size}", status.to_lowercase()))
    }
}

/// A layer's short id: 12 hex digits (the engine's other ids are tags).
fn is_layer_id(id: &str) -> bool {
    id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit())
}

fn human_bytes(bytes: i64) -> String {
    let bytes = bytes.max(0) as f64;
    match bytes {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_becomes_a_line_per_layer_state_and_throttled_sizes() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_millis(secs * 100);
        let mut progress = PullProgress::default();
        let layer = Some("3f4ca61aafcd");
        let mut lines = Vec::new();
        let mut feed = |id, status: &str, current, total, now| {
            if let Some(line) = progress.line(id, status, current, total, now) {
                lines.push(line);
            }
        };
        feed(Some("1.4"), "Pulling from team/app", None, None, at(0));
        feed(layer, "Pulling fs layer", None, None, at(0));
        feed(layer, "Downloading", Some(1_000), Some(3_400_000), at(1));
        // Within two seconds of the last line: dropped.
        for tenth in 2..20 {
            feed(
                layer,
                "Downloading",
                Some(tenth * 100_000),
                Some(3_400_000),
                at(tenth as u64),
            );
        }
        feed(
            layer,
            "Downloading",
            Some(2_100_000),
            Some(3_400_000),
            at(21),
        );
        feed(layer, "Download complete", None, None, at(22));
        feed(
            layer,
            "Extracting",
            Some(3_400_000),
            Some(3_400_000),
            at(23),
        );
        feed(layer, "Pull complete", None, None, at(24));
        feed(Some("9e19d2a2a0c7"), "Already exists", None, None, at(24));
        feed(None, "Digest: sha256:abc", None, None, at(25));
        assert_eq!(
            lines,
            [
                "1.4: Pulling from team/app",
                "layer 3f4ca61aafcd: pulling fs layer",
                "layer 3f4ca61aafcd: downloading 1.0 kB / 3.4 MB",
                "layer 3f4ca61aafcd: downloading 2.1 MB / 3.4 MB",
                "layer 3f4ca61aafcd: download complete (3.4 MB)",
                "layer 3f4ca61aafcd: extracting 3.4 MB / 3.4 MB",
                "layer 3f4ca61aafcd: pull complete (3.4 MB)",
                "layer 9e19d2a2a0c7: already exists",
                "Digest: sha256:abc",
            ]
        );
    }

    #[test]
    fn tags_split_after_the_port() {
        assert_eq!(
            split_tag("127.0.0.1:5932/a/b:1"),
            ("127.0.0.1:5932/a/b", "1")
        );
        assert_eq!(split_tag("cantila/h/p:dep_1"), ("cantila/h/p", "dep_1"));
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
    }
}
