//! The `Procfile`: process types (`web`, `worker`, ...) and the `release` command, one
//! `type: command` per line, as Heroku and its descendants read it.

use std::collections::BTreeMap;

use crate::{error::Error, names::ProcessType};

use super::dockerfile::check_command;

/// The process type that answers HTTP.
pub const WEB: &str = "web";
/// The command run once per deploy before the new release starts.
pub const RELEASE: &str = "release";

/// A parsed Procfile. Invariant: names are 1-63 of `A-Za-z0-9_-`, commands are non-empty
/// and free of control characters other than tabs.
#[derive(Debug, Default, PartialEq)]
pub struct Procfile {
    /// Every process type but `release`, by name.
    pub processes: BTreeMap<String, String>,
    pub release: Option<String>,
    pub warnings: Vec<String>,
}

impl Procfile {
    pub fn web(&self) -> Option<&str> {
        self.processes.get(WEB).map(String::as_str)
    }
}

/// Parses a Procfile. Lines that are not `type: command` are skipped with a warning; a
/// command with a control character is refused, since it can only be an error or an
/// attempt to smuggle text into a generated file.
pub fn parse(text: &str) -> Result<Procfile, Error> {
    let mut procfile = Procfile::default();
    let mut seen_at: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            procfile.warnings.push(format!(
                "Procfile line {number} is not `type: command`; it was ignored"
            ));
            continue;
        };
        let (name, command) = (name.trim(), command.trim());
        if ProcessType::parse(name).is_err() {
            procfile.warnings.push(format!(
                "Procfile line {number}: process type {name:?} is not made of letters, digits, '_' and '-'; the line was ignored"
            ));
            continue;
        }
        if command.is_empty() {
            procfile.warnings.push(format!(
                "Procfile line {number}: process type `{name}` has no command; it was ignored"
            ));
            continue;
        }
        check_command(&format!("Procfile line {number} (`{name}`)"), command)?;
        if let Some(previous) = seen_at.insert(name.to_owned(), number) {
            procfile.warnings.push(format!(
                "Procfile defines `{name}` on lines {previous} and {number}; the last one is used"
            ));
        }
        if name == RELEASE {
            procfile.release = Some(command.to_owned());
        } else {
            procfile
                .processes
                .insert(name.to_owned(), command.to_owned());
        }
    }
    Ok(procfile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_release_and_comments() {
        let procfile = parse(
            "# processes\r\nweb: gunicorn --bind 0.0.0.0:$PORT app:app\r\n\
             worker:python worker.py --queue=a:b\n\nrelease: python migrate.py\n",
        )
        .unwrap();
        assert_eq!(
            procfile.web(),
            Some("gunicorn --bind 0.0.0.0:$PORT app:app")
        );
        assert_eq!(
            procfile.processes.get("worker").map(String::as_str),
            Some("python worker.py --queue=a:b")
        );
        assert_eq!(procfile.release.as_deref(), Some("python migrate.py"));
        assert!(!procfile.processes.contains_key(RELEASE));
        assert!(procfile.warnings.is_empty(), "{:?}", procfile.warnings);
    }

    #[test]
    fn odd_lines_warn() {
        let cases: &[(&str, &str)] = &[
            ("just some text\n", "not `type: command`"),
            ("web server: node a.js\n", "is not made of letters"),
            ("worker:\n", "has no command"),
            (": node a.js\n", "is not made of letters"),
            ("web: node a.js\nweb: node b.js\n", "lines 1 and 2"),
        ];
        for (text, expected) in cases {
            let procfile = parse(text).unwrap();
            assert_eq!(procfile.warnings.len(), 1, "{text:?}");
            assert!(
                procfile.warnings[0].contains(expected),
                "{text:?}: {:?}",
                procfile.warnings
            );
        }
        assert_eq!(
            parse("web: node a.js\nweb: node b.js\n").unwrap().web(),
            Some("node b.js")
        );
    }

    #[test]
    fn control_characters_are_refused() {
        let message = parse("web: node a.js\rRUN evil\n").unwrap_err().to_string();
        assert!(message.contains("Procfile line 1"), "{message}");
        assert!(parse("web: node\u{1b}[2J a.js\n").is_err());
        assert!(parse("web: node\ta.js\n").is_ok());
    }
}
