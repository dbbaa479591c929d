//! What an image build is asked to make.

use std::collections::HashMap;

/// What to build: a tar of the context, the Dockerfile's path inside it, the tag.
#[derive(Debug)]
pub struct BuildRequest {
    pub context_tar: Vec<u8>,
    pub dockerfile: String,
    pub tag: String,
    pub labels: HashMap<String, String>,
    /// Memory limit of the build's containers, so a build cannot take the host down.
    pub memory_bytes: Option<i64>,
    /// CPU limit of the build's containers, in CPUs (1.5 = one and a half cores).
    pub cpus: Option<f64>,
    /// The network the build's RUN steps join (the release target's); `None` leaves them
    /// on the runtime's default network.
    pub network: Option<String>,
    /// The stage of a multi-stage Dockerfile to build; `None` builds the last one.
    pub target: Option<String>,
    /// Build-time variables for the Dockerfile's `ARG`s (not secrets: they are visible in
    /// the image's history).
    pub build_args: HashMap<String, String>,
}
