//! Prints the figures of the daemon's module graph: top-level modules, those in an import
//! cycle, imports that point up the layers, the files whose code names a word (the shared
//! state's name, `ApiState` by default) and the functions over 100 lines. It reads `src/`
//! with the layer check's own reader and layer table (`tests/integration/architecture/`),
//! so its counts are the check's.
//!
//!   cargo run -q --manifest-path scripts/module-graph/Cargo.toml -- [src dir] [word]

#[allow(dead_code)]
#[path = "../../../tests/integration/architecture/layers.rs"]
mod layers;
#[allow(dead_code)]
#[path = "../../../tests/integration/architecture/reading.rs"]
mod reading;

use std::path::PathBuf;

use reading::SourceFile;

fn main() {
    let mut args = std::env::args().skip(1);
    let src = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../src"));
    let word = args.next().unwrap_or_else(|| "ApiState".to_owned());
    let files = reading::read_sources(&src);
    let graph = reading::module_graph(&files);
    let cycles = reading::cycles(&graph);
    println!("top-level modules: {}", graph.len());
    println!(
        "modules in an import cycle: {}",
        cycles.iter().map(Vec::len).sum::<usize>()
    );
    for cycle in &cycles {
        println!("  cycle of {}: {}", cycle.len(), cycle.join(" "));
    }
    let mut upward = Vec::new();
    for (module, targets) in &graph {
        let Some(own) = layers::layer_of(module) else {
            println!("  not in a layer: {module}");
            continue;
        };
        for target in targets {
            if let Some(layer) = layers::layer_of(target).filter(|layer| *layer > own) {
                upward.push(format!(
                    "{module} ({}) -> {target} ({})",
                    layers::LAYERS[own].0,
                    layers::LAYERS[layer].0
                ));
            }
        }
    }
    println!("upward imports (module to module): {}", upward.len());
    for line in &upward {
        println!("  {line}");
    }
    let naming: Vec<&SourceFile> = files
        .iter()
        .filter(|file| word_positions(&file.code, &word).next().is_some())
        .collect();
    println!("files naming {word}: {}", naming.len());
    let lengths = function_lengths(&files);
    println!(
        "functions over 100 lines: {}",
        lengths.iter().filter(|(lines, _, _)| *lines > 100).count()
    );
    for (lines, path, name) in lengths.iter().take(10) {
        println!("  {lines:4} {path} {name}");
    }
}

/// Positions of `word` in `code` standing alone, not inside a longer identifier.
fn word_positions<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let bytes = code.as_bytes();
    code.match_indices(word).filter_map(move |(at, _)| {
        let before = at.checked_sub(1).map(|p| bytes[p]);
        let after = bytes.get(at + word.len()).copied();
        let alone = !before.is_some_and(reading::is_ident_char)
            && !after.is_some_and(reading::is_ident_char);
        alone.then_some(at)
    })
}

/// Every function with a body as (lines, file, name), longest first.
fn function_lengths(files: &[SourceFile]) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for file in files {
        let code = &file.code;
        for at in word_positions(code, "fn") {
            let name = reading::ident_at(code[at + 2..].trim_start(), 0);
            if name.is_empty() {
                continue; // `fn(` pointer types
            }
            let end = reading::item_end(code, at);
            if !code[at..end].ends_with('}') {
                continue; // a declaration without a body
            }
            let lines = code[at..end].matches('\n').count() + 1;
            found.push((lines, file.path.display().to_string(), name));
        }
    }
    found.sort_by_key(|(lines, _, _)| std::cmp::Reverse(*lines));
    found
}
