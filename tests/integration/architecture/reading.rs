//! Reads the crate's `src/` as text for the layer check: which top-level module each file
//! belongs to, which top-level modules its code names (with the line), and the import
//! cycles among them. Comments, string and char literals and `#[cfg(test)]` items are
//! blanked first, so only the code the daemon runs counts.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// One file of `src/`: its path under `src/`, the module path it defines, and its code
/// with comments, literals and test-only items blanked (newlines kept, so lines hold).
pub struct SourceFile {
    pub path: PathBuf,
    pub module: Vec<String>,
    pub code: String,
}

impl SourceFile {
    /// A file from its path under `src/` and its text; used for `src/` and by the tests
    /// of the check itself, which feed it made-up files.
    pub fn new(path: &str, text: &str) -> Self {
        let path = PathBuf::from(path);
        SourceFile {
            module: module_path(&path),
            code: blank(text),
            path,
        }
    }

    /// The top-level module the file belongs to: `deploy` for `deploy/worker.rs`, `lib`
    /// and `main` for the crate roots.
    pub fn top(&self) -> &str {
        &self.module[0]
    }
}

/// One place where a file's code names another top-level module.
#[derive(Debug, Clone)]
pub struct Import {
    pub from: String,
    pub to: String,
    pub file: PathBuf,
    pub line: usize,
}

/// Every `.rs` file under `src_dir`, read and blanked. Files that a `#[cfg(test)] mod x;`
/// declares are test code and left out.
pub fn read_sources(src_dir: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    collect_rs(src_dir, &mut paths);
    paths.sort();
    let files = paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            let relative = path.strip_prefix(src_dir).expect("a path under src/");
            SourceFile::new(&relative.to_string_lossy(), &text)
        })
        .collect();
    without_test_code(files)
}

/// Drops the files that `#[cfg(test)] mod x;` declarations name and blanks test-only
/// items in the rest.
pub fn without_test_code(mut files: Vec<SourceFile>) -> Vec<SourceFile> {
    let test_modules: BTreeSet<Vec<String>> = files
        .iter()
        .flat_map(|file| {
            test_only_module_files(&file.code).into_iter().map(|name| {
                let mut module = file.module.clone();
                if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
                    module.clear();
                }
                module.push(name);
                module
            })
        })
        .collect();
    files.retain(|file| !test_modules.contains(&file.module));
    for file in &mut files {
        file.code = without_test_items(&file.code);
    }
    files
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// `deploy/worker.rs` is `[deploy, worker]`; `deploy/mod.rs` is `[deploy]`; `lib.rs` is
/// `[lib]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_owned();
    if stem != "mod" || parts.is_empty() {
        parts.push(stem);
    }
    parts
}

pub fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The text with comments and the insides of string and char literals replaced by spaces
/// (newlines kept), so a word found in it is code.
pub fn blank(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let blank_range = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(bytes.len())] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let after_ident = i > 0 && is_ident_char(bytes[i - 1]);
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            blank_range(&mut out, i, end);
            i = end;
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let end = block_comment_end(bytes, i);
            blank_range(&mut out, i, end);
            i = end;
        } else if !after_ident && (c == b'r' || (c == b'b' && bytes.get(i + 1) == Some(&b'r'))) {
            let start = if c == b'b' { i + 2 } else { i + 1 };
            match raw_string_body(bytes, start) {
                Some((body, end, closing)) => {
                    blank_range(&mut out, body, end - closing);
                    i = end;
                }
                None => i += 1,
            }
        } else if c == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            blank_range(&mut out, i + 1, j);
            i = j + 1;
        } else if c == b'\'' {
            i = char_literal_end(text, &mut out, i);
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The end (exclusive) of the block comment opening at `open`; block comments nest.
fn block_comment_end(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0;
    let mut j = open;
    while j < bytes.len() {
        if bytes[j] == b'/' && bytes.get(j + 1) == Some(&b'*') {
            depth += 1;
            j += 2;
        } else if bytes[j] == b'*' && bytes.get(j + 1) == Some(&b'/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    bytes.len()
}

/// For a raw string whose hashes start at `start` (`r#".."#`): where its body starts, where
/// the literal ends (exclusive) and the closing delimiter's length; `None` when `r` there
/// starts an identifier instead.
fn raw_string_body(bytes: &[u8], start: usize) -> Option<(usize, usize, usize)> {
    let mut j = start;
    while bytes.get(j) == Some(&b'#') {
        j += 1;
    }
    if bytes.get(j) != Some(&b'"') {
        return None;
    }
    let closing: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', j - start))
        .collect();
    let body = j + 1;
    let end = bytes[body..]
        .windows(closing.len())
        .position(|window| window == closing.as_slice())
        .map_or(bytes.len(), |n| body + n + closing.len());
    Some((body, end, closing.len()))
}

/// Blanks the char literal at `at` (`'a'`, `'\n'`, `'"'`) and returns where scanning goes
/// on; a lifetime (`'a`) is left as it is.
fn char_literal_end(text: &str, out: &mut [u8], at: usize) -> usize {
    let bytes = text.as_bytes();
    let mut blank_range = |from: usize, to: usize| {
        for byte in &mut out[from..to.min(bytes.len())] {
            *byte = b' ';
        }
    };
    if bytes.get(at + 1) == Some(&b'\\') {
        let end = bytes[at + 2..]
            .iter()
            .position(|&byte| byte == b'\'')
            .map_or(bytes.len(), |n| at + 2 + n);
        blank_range(at + 1, end);
        return end + 1;
    }
    let char_len = text[at + 1..].chars().next().map_or(1, char::len_utf8);
    if bytes.get(at + 1 + char_len) == Some(&b'\'') {
        blank_range(at + 1, at + 1 + char_len);
        at + 2 + char_len
    } else {
        at + 1
    }
}

/// The end (exclusive) of the brace block opening at `open`.
fn block_end(code: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (offset, c) in code[open..].bytes().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return open + offset + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The end of the item starting at `from`: its `;`, or the end of its brace block.
pub fn item_end(code: &str, from: usize) -> usize {
    let mut depth = 0i32;
    for (offset, c) in code[from..].bytes().enumerate() {
        match c {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b';' if depth == 0 => return from + offset + 1,
            b'{' if depth == 0 => return block_end(code, from + offset),
            _ => {}
        }
    }
    code.len()
}

const TEST_ATTRIBUTES: [&str; 2] = ["#[cfg(test)]", "#[test]"];

/// Names of `#[cfg(test)] mod x;` declarations: files that are test code.
fn test_only_module_files(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for attribute in TEST_ATTRIBUTES {
        for (at, _) in code.match_indices(attribute) {
            let rest = code[at + attribute.len()..].trim_start();
            let rest = rest.strip_prefix("pub ").unwrap_or(rest);
            let Some(rest) = rest.strip_prefix("mod ") else {
                continue;
            };
            let rest = rest.trim_start();
            let name = ident_at(rest, 0);
            if rest[name.len()..].trim_start().starts_with(';') {
                names.push(name);
            }
        }
    }
    names
}

/// The code with every `#[cfg(test)]` or `#[test]` item blanked.
fn without_test_items(code: &str) -> String {
    let mut out = code.as_bytes().to_vec();
    for attribute in TEST_ATTRIBUTES {
        for (at, _) in code.match_indices(attribute) {
            let end = item_end(code, at + attribute.len());
            for byte in &mut out[at..end] {
                if *byte != b'\n' {
                    *byte = b' ';
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn ident_at(code: &str, at: usize) -> String {
    code[at..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

/// Every place the file's code names another top-level module through `crate::` (also
/// inside `use crate::{a, b::c}` groups), or through `super::` in a top-level file, whose
/// parent is the crate root.
pub fn imports(file: &SourceFile) -> Vec<Import> {
    let code = &file.code;
    let mut found = Vec::new();
    let mut prefixes = vec!["crate::"];
    if file.module.len() == 1 {
        prefixes.push("super::");
    }
    let mut note = |name: String, at: usize| {
        if !name.is_empty() && name != "self" && name != file.top() {
            found.push(Import {
                from: file.top().to_owned(),
                to: name,
                file: file.path.clone(),
                line: line_of(code, at),
            });
        }
    };
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            if at > 0 && is_ident_char(code.as_bytes()[at - 1]) {
                continue;
            }
            let rest_at = at + prefix.len();
            if !code[rest_at..].starts_with('{') {
                note(ident_at(code, rest_at), at);
                continue;
            }
            // A group: each top-level item of `{a, b::c, d::{e, f}}` names a module.
            let group_at = rest_at + 1;
            let inner = &code[group_at..block_end(code, rest_at) - 1];
            let mut depth = 0;
            let mut item_start = 0;
            for (offset, c) in inner
                .char_indices()
                .chain(std::iter::once((inner.len(), ',')))
            {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = &inner[item_start..offset];
                        let trimmed = item.trim_start();
                        let item_at = group_at + item_start + (item.len() - trimmed.len());
                        note(ident_at(trimmed, 0), item_at);
                        item_start = offset + 1;
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// Top-level module to the top-level modules it imports (only modules the files define).
pub fn module_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = files.iter().map(SourceFile::top).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let targets = graph.entry(file.top().to_owned()).or_default();
        for import in imports(file) {
            if known.contains(import.to.as_str()) {
                targets.insert(import.to);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm): each
/// is a set of modules that import each other, directly or through the others.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            self.index.insert(node, self.next);
            self.low.insert(node, self.next);
            self.next += 1;
            self.stack.push(node);
            self.on_stack.insert(node);
            let graph = self.graph;
            for target in graph.get(node).into_iter().flatten() {
                let target = target.as_str();
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[node].min(self.low[target]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[node].min(self.index[target]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

/// The files (paths under `src/`) whose code names the crate `name` (`rusqlite::...` or
/// `use rusqlite`), as a word.
pub fn files_naming_crate<'a>(files: &'a [SourceFile], name: &str) -> Vec<&'a Path> {
    files
        .iter()
        .filter(|file| {
            file.code.match_indices(name).any(|(at, _)| {
                let bytes = file.code.as_bytes();
                let before = at.checked_sub(1).map(|p| bytes[p]);
                let after = &file.code[at + name.len()..];
                !before.is_some_and(|b| is_ident_char(b) || b == b':') && after.starts_with("::")
            })
        })
        .map(|file| file.path.as_path())
        .collect()
}
