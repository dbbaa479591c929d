//! Files a repository hands the build: a user's Dockerfile (read for EXPOSE, ARG/ENV and
//! the final stage) and `.dockerignore` (glob rules applied to every path of the context).
#![no_main]

use cantila::deploy::context::IgnoreRules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cantila::plan::inspect_dockerfile(text);
    let rules = IgnoreRules::parse(text);
    for path in [
        "Dockerfile",
        "src/main.rs",
        ".git/config",
        "a/b/c/d.txt",
        ".cantila.Dockerfile",
    ] {
        let _ = rules.excludes(path);
    }
});
