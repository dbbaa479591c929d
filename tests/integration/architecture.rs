//! The layer check: reads the daemon's `src/` as text and fails when a top-level module
//! imports one in a higher layer, when two top-level modules import each other (directly
//! or through others), when a module sits in no layer, or when an outside system's crate is
//! named outside its adapter. `ARCHITECTURE.md` states the same layers as invariants; this
//! table is the one the build keeps.

mod layers;
mod reading;

use std::{collections::BTreeSet, path::Path};

use layers::{layer_of, ADAPTER_CRATES, LAYERS};
use reading::{Import, SourceFile};

/// What the check finds wrong in a set of source files.
#[derive(Debug, Default)]
struct Findings {
    /// Top-level modules in no layer.
    unlayered: BTreeSet<String>,
    /// Imports of a module in a higher layer.
    upward: Vec<Import>,
    /// Sets of modules that import each other.
    cycles: Vec<Vec<String>>,
}

fn check(files: &[SourceFile]) -> Findings {
    let mut findings = Findings::default();
    for file in files {
        if layer_of(file.top()).is_none() {
            findings.unlayered.insert(file.top().to_owned());
        }
    }
    let known: BTreeSet<&str> = files.iter().map(SourceFile::top).collect();
    for import in files.iter().flat_map(reading::imports) {
        if !known.contains(import.to.as_str()) {
            continue;
        }
        if let (Some(from), Some(to)) = (layer_of(&import.from), layer_of(&import.to)) {
            if to > from {
                findings.upward.push(import);
            }
        }
    }
    findings.cycles = reading::cycles(&reading::module_graph(files));
    findings
}

fn daemon_sources() -> Vec<SourceFile> {
    reading::read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn describe(import: &Import) -> String {
    let layer = |module: &str| layer_of(module).map_or("none", |layer| LAYERS[layer].0);
    format!(
        "src/{}:{}: `{}` ({}) imports `{}` ({})",
        import.file.display(),
        import.line,
        import.from,
        layer(&import.from),
        import.to,
        layer(&import.to)
    )
}

#[test]
fn every_top_level_module_sits_in_a_layer() {
    let findings = check(&daemon_sources());
    assert!(
        findings.unlayered.is_empty(),
        "modules in no layer (add each to LAYERS here and in ARCHITECTURE.md): {:?}",
        findings.unlayered
    );
}

#[test]
fn imports_point_only_down_the_layers() {
    let findings = check(&daemon_sources());
    let upward: Vec<String> = findings.upward.iter().map(describe).collect();
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let findings = check(&daemon_sources());
    assert!(
        findings.cycles.is_empty(),
        "top-level modules that import each other, directly or through the others: {:?}",
        findings.cycles
    );
}

#[test]
fn outside_systems_crates_are_named_only_in_their_adapter() {
    let files = daemon_sources();
    for (name, home) in ADAPTER_CRATES {
        let strays: Vec<String> = reading::files_naming_crate(&files, name)
            .into_iter()
            .map(|path| path.display().to_string())
            .filter(|path| !path.starts_with(home))
            .collect();
        assert!(
            strays.is_empty(),
            "`{name}` belongs to src/{home} but these files name it: {strays:?}"
        );
    }
}

/// The check itself can fail: made-up sources with an upward import, a cycle, a module in
/// no layer and a stray adapter crate are each reported, with the line of the import.
#[test]
fn the_check_reports_an_upward_import_a_cycle_and_a_module_in_no_layer() {
    let files = reading::without_test_code(vec![
        SourceFile::new(
            "store/mod.rs",
            "//! The store.\nuse rusqlite::Connection;\n\nuse crate::{\n    ids,\n    deploy::Deploy,\n};\n",
        ),
        SourceFile::new(
            "deploy/mod.rs",
            "use crate::ids;\nfn run() { crate::previews::start(); }\n",
        ),
        SourceFile::new(
            "previews.rs",
            "use crate::deploy;\n// crate::api is only named in a comment.\nconst S: &str = \"crate::api\";\n#[cfg(test)]\nmod tests { use crate::api::Router; }\n",
        ),
        SourceFile::new("ids.rs", "pub fn new() {}\n"),
        SourceFile::new("api/mod.rs", "use crate::deploy;\n"),
        SourceFile::new("gadgets.rs", "use crate::ids;\n"),
        SourceFile::new("runtime/mod.rs", "use rusqlite::params;\n"),
    ]);
    let findings = check(&files);
    let upward: Vec<String> = findings.upward.iter().map(describe).collect();
    assert_eq!(
        upward,
        ["src/store/mod.rs:6: `store` (adapters) imports `deploy` (services)"],
        "an import in a comment, a string or a test module is not an import"
    );
    assert_eq!(
        findings.cycles,
        [vec!["deploy".to_owned(), "previews".to_owned()]]
    );
    assert_eq!(
        findings.unlayered.into_iter().collect::<Vec<_>>(),
        ["gadgets"]
    );
    let rusqlite: Vec<String> = reading::files_naming_crate(&files, "rusqlite")
        .into_iter()
        .map(|path| path.display().to_string())
        .collect();
    assert_eq!(rusqlite, ["store/mod.rs", "runtime/mod.rs"]);
}
