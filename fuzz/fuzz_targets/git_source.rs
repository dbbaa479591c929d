//! Git refs and repository locations given to the API (`ref`, `repo`, `branch`) and in
//! webhook payloads. A parsed ref or location must print back to something that parses
//! to the same value, and a ref never looks like an option to git.
#![no_main]

use cantila::source::{GitRef, RepoLocation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(git_ref) = GitRef::parse(text) {
        assert!(!git_ref.as_str().starts_with('-'), "{git_ref}");
        assert!(!git_ref.as_str().contains(".."), "{git_ref}");
        assert!(
            !git_ref.as_str().chars().any(|c| c.is_ascii_control()),
            "{git_ref}"
        );
        let again = GitRef::parse(git_ref.as_str()).expect("a parsed ref parses again");
        assert_eq!(again.as_str(), git_ref.as_str());
    }
    if let Ok(location) = RepoLocation::parse(text) {
        let printed = location.to_string();
        assert!(!printed.starts_with('-'), "{printed}");
        let again = RepoLocation::parse(&printed).expect("a printed location parses again");
        assert_eq!(again.to_string(), printed);
    }
});
