//! The order services start in: every service after those it depends on, ties in the
//! order given (services come by name: the YAML tree keeps mappings sorted), and a cycle
//! named service by service.

use std::collections::BTreeMap;

/// Orders `names` (ties keep the order given) so that each comes after the names `deps` gives
/// it. A dependency on a name not in `names` is the caller's to report; here it is
/// skipped. A cycle is an error naming it: `a → b → a`.
pub fn dependency_order(
    names: &[String],
    deps: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, String> {
    let mut placed: Vec<String> = Vec::with_capacity(names.len());
    let known = |name: &str| names.iter().any(|n| n == name);
    // Repeatedly place the first service (in the order given) whose dependencies are placed:
    // quadratic, and services are at most a few dozen.
    while placed.len() < names.len() {
        let next = names.iter().find(|name| {
            !placed.contains(name)
                && deps
                    .get(*name)
                    .is_none_or(|wanted| wanted.iter().all(|d| !known(d) || placed.contains(d)))
        });
        match next {
            Some(name) => placed.push(name.clone()),
            None => {
                let left: Vec<&String> = names.iter().filter(|n| !placed.contains(n)).collect();
                return Err(describe_cycle(&left, deps, &known));
            }
        }
    }
    Ok(placed)
}

/// Follows unplaced dependencies from the first unplaced service until one repeats.
fn describe_cycle(
    left: &[&String],
    deps: &BTreeMap<String, Vec<String>>,
    known: &dyn Fn(&str) -> bool,
) -> String {
    let mut path: Vec<String> = vec![left[0].clone()];
    loop {
        let current = path.last().cloned().unwrap_or_default();
        let next = deps
            .get(&current)
            .and_then(|wanted| wanted.iter().find(|d| known(d) && left.contains(d)))
            .cloned();
        let Some(next) = next else {
            return format!("the services {} depend on each other", path.join(", "));
        };
        if let Some(start) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[start..].to_vec();
            cycle.push(next);
            return format!("`depends_on` makes a cycle: {}", cycle.join(" → "));
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(name, wanted)| {
                (
                    (*name).to_owned(),
                    wanted.iter().map(|d| (*d).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn dependencies_come_first_and_ties_keep_the_file_order() {
        let check = |order: &[&str], pairs: &[(&str, &[&str])], expected: &[&str]| {
            assert_eq!(
                dependency_order(&names(order), &deps(pairs)).unwrap(),
                names(expected)
            );
        };
        check(
            &["web", "worker", "redis", "db"],
            &[("web", &["db", "redis"]), ("worker", &["redis", "db"])],
            &["redis", "db", "web", "worker"],
        );
        check(&["a", "b", "c"], &[], &["a", "b", "c"]);
        check(
            &["a", "b", "c"],
            &[("a", &["c"]), ("c", &["b"])],
            &["b", "c", "a"],
        );
        // An unknown name is reported by the caller, not here.
        check(&["a"], &[("a", &["ghost"])], &["a"]);
    }

    #[test]
    fn a_cycle_is_named() {
        let err = dependency_order(
            &names(&["web", "a", "b", "c"]),
            &deps(&[("web", &["a"]), ("a", &["b"]), ("b", &["c"]), ("c", &["a"])]),
        )
        .unwrap_err();
        assert!(err.contains("a → b → c → a"), "{err}");
        let err = dependency_order(&names(&["a"]), &deps(&[("a", &["a"])])).unwrap_err();
        assert!(err.contains("a → a"), "{err}");
    }
}
