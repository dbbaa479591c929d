//! Dockerfile text: reading a user's Dockerfile for what the plan needs (the exposed port,
//! BuildKit-only syntax), and writing generated ones so no repository value can add an
//! instruction.

use std::collections::HashMap;

use crate::error::Error;

/// What the planner learns from a user's Dockerfile.
#[derive(Debug, Default, PartialEq)]
pub struct DockerfileFacts {
    /// TCP ports the final stage exposes, in order.
    pub ports: Vec<u16>,
    pub warnings: Vec<String>,
    /// Every stage in order: its name (`FROM ... AS name`, lowercased like Docker) and
    /// the TCP ports it exposes, so a build target's port can be read.
    pub stages: Vec<Stage>,
}

/// One `FROM` stage of a Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stage {
    pub name: Option<String>,
    pub ports: Vec<u16>,
}

impl DockerfileFacts {
    /// The stage a build target names, if the Dockerfile has it.
    pub fn stage(&self, target: &str) -> Option<&Stage> {
        self.stages
            .iter()
            .find(|stage| stage.name.as_deref() == Some(target))
    }
}

/// The name a `FROM` line gives its stage (`FROM image AS name`), lowercased.
fn stage_name(rest: &str) -> Option<String> {
    let words: Vec<&str> = rest
        .split_whitespace()
        .filter(|word| !word.starts_with("--"))
        .collect();
    match words.as_slice() {
        [_, keyword, name] if keyword.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
        _ => None,
    }
}

/// Reads the final stage's `EXPOSE` ports (with `ARG`/`ENV` values substituted) and notes
/// BuildKit-only syntax, which the classic builder of the engine cannot build.
pub fn inspect(text: &str) -> DockerfileFacts {
    let mut facts = DockerfileFacts::default();
    let escape = escape_directive(text, &mut facts.warnings);
    let mut global_args: HashMap<String, String> = HashMap::new();
    let mut stage_vars: HashMap<String, String> = HashMap::new();
    let mut in_stage = false;
    let mut buildkit_noted = false;
    let mut stage: Option<String> = None;
    for line in logical_lines(text, escape) {
        let (instruction, rest) = match line.split_once(char::is_whitespace) {
            Some((instruction, rest)) => (instruction.to_ascii_uppercase(), rest.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        match instruction.as_str() {
            "FROM" => {
                // Each stage starts with no ports and sees only the global ARGs it
                // redeclares, so the final image's ports are the last stage's.
                if in_stage {
                    facts.stages.push(Stage {
                        name: stage.take(),
                        ports: std::mem::take(&mut facts.ports),
                    });
                }
                stage = stage_name(rest);
                in_stage = true;
                stage_vars.clear();
                facts.ports.clear();
            }
            "ARG" => {
                for word in rest.split_whitespace() {
                    let (name, value) = match word.split_once('=') {
                        Some((name, value)) => {
                            let visible = if in_stage { &stage_vars } else { &global_args };
                            (name, Some(substitute(&unquote(value), visible)))
                        }
                        // A stage's bare `ARG NAME` brings in the global default, if any.
                        None if in_stage => (word, global_args.get(word).cloned()),
                        None => (word, None),
                    };
                    let target = if in_stage {
                        &mut stage_vars
                    } else {
                        &mut global_args
                    };
                    match value {
                        Some(value) => {
                            target.insert(name.to_owned(), value);
                        }
                        None => {
                            target.remove(name);
                        }
                    }
                }
            }
            "ENV" if in_stage => {
                for (key, value) in env_pairs(rest) {
                    let value = substitute(&value, &stage_vars);
                    stage_vars.insert(key, value);
                }
            }
            "EXPOSE" if in_stage => {
                for word in rest.split_whitespace() {
                    let resolved = substitute(word, &stage_vars);
                    match parse_port(&resolved) {
                        PortToken::Tcp(port) => facts.ports.push(port),
                        PortToken::Udp => facts.warnings.push(format!(
                            "the Dockerfile exposes {word}, a UDP port; Cantila routes only HTTP over TCP, so it was ignored"
                        )),
                        PortToken::Invalid => facts.warnings.push(format!(
                            "EXPOSE {word} in the Dockerfile is not a port Cantila can resolve; it was ignored"
                        )),
                    }
                }
            }
            "RUN" if !buildkit_noted => {
                let uses_mount = rest
                    .split_whitespace()
                    .take_while(|word| word.starts_with("--"))
                    .any(|word| word.starts_with("--mount") || word.starts_with("--network"));
                if uses_mount || rest.starts_with("<<") {
                    buildkit_noted = true;
                    facts.warnings.push(
                        "the Dockerfile uses BuildKit-only syntax (RUN --mount, --network or a heredoc); \
                         the engine's classic builder may fail to build it"
                            .to_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    if in_stage {
        facts.stages.push(Stage {
            name: stage,
            ports: facts.ports.clone(),
        });
    }
    facts
}

/// Reads the parser directives at the very top (`# escape=`, `# syntax=`); returns the
/// escape character, which decides how lines continue.
fn escape_directive(text: &str, warnings: &mut Vec<String>) -> char {
    let mut escape = '\\';
    for line in text.lines() {
        let Some(comment) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) || key.is_empty() {
            break;
        }
        match key.as_str() {
            "escape" if value.trim() == "`" => escape = '`',
            "syntax" => warnings.push(format!(
                "the Dockerfile asks for the BuildKit frontend {}; the engine's classic builder ignores it",
                value.trim()
            )),
            _ => {}
        }
    }
    escape
}

/// Joins continued lines and drops comments and blank lines, as Docker's parser does.
fn logical_lines(text: &str, escape: char) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut continuing = false;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && continuing) {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        if let Some(head) = body.strip_suffix(escape) {
            current.push_str(head);
            current.push(' ');
            continuing = true;
        } else {
            current.push_str(body);
            lines.push(current.trim().to_owned());
            current.clear();
            continuing = false;
        }
    }
    if !current.trim().is_empty() {
        lines.push(current.trim().to_owned());
    }
    lines
}

/// Splits `ENV` arguments: `KEY=value KEY2="two words"`, or the legacy `KEY value`.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let words = shell_words(rest);
    let Some(first) = words.first() else {
        return Vec::new();
    };
    if !first.contains('=') {
        let value = rest
            .trim_start()
            .strip_prefix(first.as_str())
            .unwrap_or("")
            .trim();
        return vec![(first.clone(), unquote(value))];
    }
    words
        .iter()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Splits on whitespace outside quotes and removes the quotes.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in text.chars() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => current.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                started = true;
            }
            None if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            None => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}

fn unquote(value: &str) -> String {
    shell_words(value).join(" ")
}

/// Expands `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`; unknown
/// names expand to nothing, like Docker's.
fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let mut inner = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                inner.push(c);
            }
            let value = if let Some((name, default)) = inner.split_once(":-") {
                vars.get(name)
                    .filter(|value| !value.is_empty())
                    .cloned()
                    .unwrap_or_else(|| default.to_owned())
            } else if let Some((name, alternative)) = inner.split_once(":+") {
                vars.get(name)
                    .filter(|value| !value.is_empty())
                    .map(|_| alternative.to_owned())
                    .unwrap_or_default()
            } else {
                vars.get(&inner).cloned().unwrap_or_default()
            };
            out.push_str(&value);
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            }
        }
    }
    out
}

enum PortToken {
    Tcp(u16),
    Udp,
    Invalid,
}

/// Parses `8080`, `8080/tcp`, `53/udp` or a range `8000-8010` (its first port).
fn parse_port(token: &str) -> PortToken {
    let (number, protocol) = token.split_once('/').unwrap_or((token, "tcp"));
    let first = number.split_once('-').map_or(number, |(start, _)| start);
    match (protocol.to_ascii_lowercase().as_str(), first.parse::<u16>()) {
        (_, Ok(0)) | (_, Err(_)) => PortToken::Invalid,
        ("tcp", Ok(port)) => PortToken::Tcp(port),
        ("udp", Ok(_)) => PortToken::Udp,
        _ => PortToken::Invalid,
    }
}

/// A Dockerfile being generated. Invariant: every line is one instruction; repository
/// values enter only as JSON strings (`exec`) or after `checked_token`, and `finish`
/// refuses any line that could start or continue another instruction.
#[derive(Default)]
pub struct DockerfileWriter {
    lines: Vec<String>,
}

impl DockerfileWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// An instruction written by the planner (fixed text, checked tokens, config images).
    pub fn line(&mut self, instruction: impl Into<String>) {
        self.lines.push(instruction.into());
    }

    /// A blank line between stages, for people reading the plan.
    pub fn blank(&mut self) {
        self.lines.push(String::new());
    }

    /// `instruction ["arg", ...]`: exec form, each argument a JSON string, so quotes,
    /// spaces and `$` in repository values stay data.
    pub fn exec(&mut self, instruction: &str, args: &[&str]) {
        let quoted: Vec<String> = args.iter().map(|arg| json_string(arg)).collect();
        self.lines
            .push(format!("{instruction} [{}]", quoted.join(", ")));
    }

    pub fn finish(self) -> Result<String, Error> {
        for line in &self.lines {
            if line.chars().any(char::is_control) || line.trim_end().ends_with('\\') {
                return Err(Error::Internal(format!(
                    "generated Dockerfile line {line:?} could start or continue another instruction"
                )));
            }
        }
        let mut text = self.lines.join("\n");
        text.push('\n');
        Ok(text)
    }
}

/// A string as JSON, which Docker's exec form parses back to the same string.
fn json_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Checks a repository value (a binary name, a package path) before it is written into a
/// Dockerfile line outside JSON: letters, digits and `. _ - /`, relative, no `..`.
pub fn checked_token<'a>(what: &str, value: &'a str) -> Result<&'a str, Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let valid = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(allowed)
        && !value.starts_with(['-', '/'])
        && !value.split('/').any(|part| part == "..");
    if valid {
        Ok(value)
    } else {
        Err(Error::Invalid(format!(
            "{what} {value:?} cannot be used in a generated Dockerfile; use letters, digits, \
             '.', '_', '-' and '/' (a relative path without '..'), or add a Dockerfile"
        )))
    }
}

/// Refuses control characters (newlines above all) in a command taken from the repository;
/// tabs are allowed since shells treat them as spaces.
pub fn check_command(what: &str, command: &str) -> Result<(), Error> {
    if command.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Error::Invalid(format!(
            "{what} contains a newline or another control character; put multi-line logic in a script file and call it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(text: &str) -> Vec<u16> {
        inspect(text).ports
    }

    #[test]
    fn stages_are_named_with_their_ports() {
        let facts = inspect(
            "FROM busybox AS Build\nEXPOSE 1000\nFROM --platform=linux/amd64 busybox as prod\nEXPOSE 2000\nFROM busybox\nEXPOSE 3000\n",
        );
        assert_eq!(facts.ports, vec![3000]);
        assert_eq!(facts.stage("build").unwrap().ports, vec![1000]);
        assert_eq!(facts.stage("prod").unwrap().ports, vec![2000]);
        assert_eq!(facts.stages.len(), 3);
        assert_eq!(facts.stages[2].name, None);
        assert!(facts.stage("other").is_none());
    }

    #[test]
    fn expose_forms() {
        let cases: &[(&str, &[u16])] = &[
            ("FROM busybox\nEXPOSE 8080\n", &[8080]),
            ("FROM busybox\nexpose 80/tcp 443\n", &[80, 443]),
            ("FROM busybox\nEXPOSE 53/udp 8000-8010\n", &[8000]),
            ("FROM busybox\nENV PORT=3000\nEXPOSE $PORT\n", &[3000]),
            ("FROM busybox\nENV PORT 4000\nEXPOSE ${PORT}\n", &[4000]),
            ("FROM busybox\nARG PORT=5000\nEXPOSE ${PORT}/tcp\n", &[5000]),
            (
                "ARG PORT=5001\nFROM busybox\nARG PORT\nEXPOSE $PORT\n",
                &[5001],
            ),
            (
                "ARG PORT=5002\nFROM busybox\nEXPOSE ${PORT:-6000}\n",
                &[6000],
            ),
            ("FROM busybox\nEXPOSE $NOPE\n", &[]),
            ("FROM busybox\nEXPOSE 0 70000 http\n", &[]),
            // Only the final stage's ports reach the image.
            (
                "FROM node AS build\nEXPOSE 3000\nFROM busybox\nEXPOSE 8081\n",
                &[8081],
            ),
            ("FROM node AS build\nEXPOSE 3000\nFROM busybox\n", &[]),
            // Continuations and comments inside them.
            ("FROM busybox\nEXPOSE 80 \\\n# a comment\n  81\n", &[80, 81]),
            ("# escape=`\nFROM busybox\nEXPOSE 90 `\n 91\n", &[90, 91]),
            // An EXPOSE inside a RUN's continued shell text is not an instruction.
            ("FROM busybox\nRUN echo \\\n EXPOSE 99\n", &[]),
            ("", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(ports(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn expose_warnings() {
        let facts = inspect("FROM busybox\nEXPOSE 53/udp $NOPE 8080\n");
        assert_eq!(facts.ports, [8080]);
        assert_eq!(facts.warnings.len(), 2, "{:?}", facts.warnings);
        assert!(facts.warnings[0].contains("UDP"));
        assert!(facts.warnings[1].contains("$NOPE"));
    }

    #[test]
    fn buildkit_syntax_is_noted() {
        for text in [
            "# syntax=docker/dockerfile:1\nFROM busybox\n",
            "FROM busybox\nRUN --mount=type=cache,target=/root/.cache true\n",
            "FROM busybox\nRUN <<EOF\necho hi\nEOF\n",
        ] {
            let facts = inspect(text);
            assert_eq!(facts.warnings.len(), 1, "{text:?}: {:?}", facts.warnings);
            assert!(facts.warnings[0].contains("BuildKit"), "{text:?}");
        }
        assert!(inspect("FROM busybox\nRUN true\n").warnings.is_empty());
    }

    #[test]
    fn writer_quotes_and_refuses_injection() {
        let mut dockerfile = DockerfileWriter::new();
        dockerfile.line("FROM busybox:latest");
        dockerfile.exec("CMD", &["sh", "-c", "echo \"hi\"\nRUN evil \\"]);
        let text = dockerfile.finish().unwrap();
        assert_eq!(
            text,
            "FROM busybox:latest\nCMD [\"sh\", \"-c\", \"echo \\\"hi\\\"\\nRUN evil \\\\\"]\n"
        );
        assert_eq!(text.lines().count(), 2);

        let mut dockerfile = DockerfileWriter::new();
        dockerfile.line("RUN true\nRUN evil");
        assert!(matches!(dockerfile.finish(), Err(Error::Internal(_))));
        let mut dockerfile = DockerfileWriter::new();
        dockerfile.line("RUN true \\");
        assert!(matches!(dockerfile.finish(), Err(Error::Internal(_))));
    }

    #[test]
    fn tokens_and_commands() {
        assert!(checked_token("binary", "my-app_2").is_ok());
        assert!(checked_token("package", "cmd/server").is_ok());
        for bad in ["", "a b", "../x", "/abs", "-flag", "x\ny", "a$b", "a;b"] {
            assert!(checked_token("binary", bad).is_err(), "{bad:?}");
        }
        assert!(check_command("web", "gunicorn\t-w 2 app:app").is_ok());
        assert!(check_command("web", "node a.js\nRUN evil").is_err());
        assert!(check_command("web", "node a.js\r").is_err());
    }
}
