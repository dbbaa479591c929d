//! The layer table the check keeps (and `scripts/module-graph` counts against);
//! ARCHITECTURE.md states the same layers.

/// The layers, lowest first. A module imports only modules of its own layer or lower ones;
/// within a layer, no two modules may import each other.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "ids",
            "clock",
            "duration",
            "names",
            "error",
            "labels",
            "model",
            "pagination",
            "live",
            "config",
            "locks",
        ],
    ),
    (
        "adapters",
        &[
            "store",
            "runtime",
            "source",
            "plan",
            "stack",
            "tls",
            "s3",
            "secrets",
            "registry_api",
        ],
    ),
    ("edge", &["edge"]),
    (
        "services",
        &[
            "accounts",
            "audit",
            "registries",
            "env",
            "domains",
            "projects",
            "networks",
            "assets",
            "routing",
            "logs",
            "metrics",
            "volumes",
            "database",
            "services",
            "backup",
            "state_backup",
            "state_restore",
            "deploy",
            "previews",
            "git_connection",
            "image_source",
            "runs",
            "terminal",
            "jobs",
        ],
    ),
    ("api", &["api", "console"]),
    (
        "composition root",
        &["lib", "main", "cli", "compose", "handoff"],
    ),
];

/// Outside systems' crates and the only directory of `src/` that may name each.
pub const ADAPTER_CRATES: &[(&str, &str)] = &[
    ("rusqlite", "store/"),
    ("bollard", "runtime/docker/"),
    ("git2", "source/"),
    ("instant_acme", "tls/"),
];

pub fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}
