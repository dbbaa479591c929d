//! A compose file's text to a JSON-like tree: YAML parsed with anchors and merge keys
//! resolved under a budget, then `${VAR}` interpolated in every string value.
//! Invariant: the tree handed on is a mapping whose keys are strings, and no `$` is left
//! uninterpreted in it (`$$` has become `$`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;

/// The most of a compose file that is read; real ones are a few kilobytes.
pub const COMPOSE_LIMIT: u64 = 256 * 1024;

/// Parses the YAML text into a tree. Anchors, aliases and `<<` merge keys are resolved;
/// booleans are only `true`/`false` (YAML 1.2, as compose reads them, so `yes` stays a
/// string); duplicate keys are an error. `shown` names the file in messages.
pub fn yaml_tree(text: &str, shown: &str) -> Result<Value, Error> {
    if text.len() as u64 > COMPOSE_LIMIT {
        return Err(Error::Invalid(format!(
            "{shown} is larger than {} KiB",
            COMPOSE_LIMIT / 1024
        )));
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    let tree: Value = serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        Error::Invalid(format!(
            "{shown} is not valid YAML: {}",
            err.to_string().trim_end().replace('\n', " ")
        ))
    })?;
    match tree {
        Value::Object(_) => Ok(tree),
        Value::Null => Err(Error::Invalid(format!(
            "{shown} is empty; it needs a `services` mapping"
        ))),
        _ => Err(Error::Invalid(format!(
            "{shown} is not a mapping; it needs a `services` mapping at its top"
        ))),
    }
}

/// Reads a `.env` file as compose does for interpolation: `KEY=VALUE` lines, `#` comments,
/// an optional `export `, and single or double quotes around the value stripped. Lines
/// that are not assignments are skipped.
pub fn dotenv(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(end)) if value.len() >= 2 && end == q => {
                &value[1..value.len() - 1]
            }
            _ => value.split(" #").next().unwrap_or(value).trim_end(),
        };
        vars.insert(key.to_owned(), value.to_owned());
    }
    vars
}

/// Replaces `${VAR}` forms in every string value of the tree (keys are left alone, as
/// compose does). `path` is where a failure is reported.
pub fn interpolate_tree(
    value: &mut Value,
    vars: &dyn Fn(&str) -> Option<String>,
    path: &str,
) -> Result<(), Error> {
    match value {
        Value::String(text) => {
            if text.contains('$') {
                *text = interpolate(text, vars)
                    .map_err(|why| Error::Invalid(format!("`{path}`: {why}")))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, vars, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, vars, &inner)?;
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Compose's interpolation: `$$` is a `$`; `$VAR` and `${VAR}` are the variable (empty when
/// unset); `${VAR:-default}` / `${VAR-default}` fall back when unset or empty / unset;
/// `${VAR:?message}` / `${VAR?message}` fail; `${VAR:+other}` / `${VAR+other}` substitute
/// when set. Defaults may themselves hold variables.
pub fn interpolate(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = closing_brace(braced).ok_or_else(|| {
                format!("`${{` without its closing `}}` in {text:?}; write `$$` for a literal `$`")
            })?;
            out.push_str(&substitute(&braced[..end], vars)?);
            rest = &braced[end + 1..];
        } else {
            let len = after
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
                })
                .map_or(after.len(), |(i, _)| i);
            if len == 0 {
                // A lone `$` before something that is no name stays as written.
                out.push('$');
            } else {
                out.push_str(&vars(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing a `${`, counting nested `${...}` in defaults.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn substitute(inner: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() {
        return Err(format!("`${{{inner}}}` names no variable"));
    }
    let value = vars(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (operator, argument) = if op.is_empty() {
        ("", "")
    } else if op.len() >= 2 && matches!(&op[..2], ":-" | ":?" | ":+") {
        op.split_at(2)
    } else {
        op.split_at(1)
    };
    let argument = || interpolate(argument, vars);
    match operator {
        "" => Ok(value.unwrap_or_default()),
        ":-" if set_nonempty => Ok(value.unwrap_or_default()),
        ":-" => argument(),
        "-" => match value {
            Some(value) => Ok(value),
            None => argument(),
        },
        ":?" if set_nonempty => Ok(value.unwrap_or_default()),
        "?" if value.is_some() => Ok(value.unwrap_or_default()),
        ":?" | "?" => Err(format!("required variable `{name}` is not set: {}", argument()?)),
        ":+" if set_nonempty => argument(),
        "+" if value.is_some() => argument(),
        ":+" | "+" => Ok(String::new()),
        _ => Err(format!(
            "`${{{inner}}}` is not an interpolation compose knows; use `${{{name}}}`, `${{{name}:-default}}` or `${{{name}:?message}}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".to_owned()),
            "EMPTY" => Some(String::new()),
            "TAG" => Some("16".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_follows_compose() {
        let check = |text: &str, expected: &str| {
            assert_eq!(interpolate(text, &vars).unwrap(), expected, "{text}");
        };
        check("postgres:${TAG}", "postgres:16");
        check("$SET/$UNSET.", "value/.");
        check("$$HOME and $${SET}", "$HOME and ${SET}");
        check("${UNSET:-fallback}", "fallback");
        check("${EMPTY:-fallback}", "fallback");
        check("${EMPTY-fallback}", "");
        check("${UNSET-${SET}}", "value");
        check("${UNSET:-${ALSO:-deep}}x", "deepx");
        check("${SET:+yes}${UNSET:+no}", "yes");
        check("cost: 5$", "cost: 5$");
        let err = interpolate("${UNSET:?set the password}", &vars).unwrap_err();
        assert!(
            err.contains("`UNSET`") && err.contains("set the password"),
            "{err}"
        );
        assert!(interpolate("${SET", &vars).unwrap_err().contains("closing"));
        assert!(interpolate("${SET/x/y}", &vars).is_err());
    }

    #[test]
    fn yaml_merge_keys_resolve_and_yes_stays_a_string() {
        let tree = yaml_tree(
            "x-env: &env\n  A: yes\nservices:\n  web:\n    environment:\n      <<: *env\n      B: 'no'\n",
            "compose.yaml",
        )
        .unwrap();
        assert_eq!(tree["services"]["web"]["environment"]["A"], "yes");
        assert_eq!(tree["services"]["web"]["environment"]["B"], "no");
        let err = yaml_tree("services:\n  a: 1\n  a: 2\n", "compose.yaml").unwrap_err();
        assert!(
            err.to_string().contains("compose.yaml is not valid YAML"),
            "{err}"
        );
        assert!(yaml_tree("- a\n", "compose.yaml").is_err());
        assert!(yaml_tree("", "compose.yaml").is_err());
    }

    #[test]
    fn dotenv_files_read_like_compose() {
        let vars =
            dotenv("# comment\nA=1\nexport B = two \nC=\"quoted # kept\"\nD=x # note\nbad line\n");
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two");
        assert_eq!(vars["C"], "quoted # kept");
        assert_eq!(vars["D"], "x");
        assert_eq!(vars.len(), 4);
    }
}
