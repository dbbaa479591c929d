//! The Procfile of a repository: any text, parsed into process types and commands.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(procfile) = cantila::plan::parse_procfile(text) {
        // The parser's invariant: names are safe tokens, commands non-empty and free of
        // control characters other than tabs, so neither can break a generated file.
        let commands = procfile
            .processes
            .iter()
            .map(|(name, command)| (name.as_str(), command));
        for (name, command) in commands.chain(procfile.release.as_ref().map(|c| ("release", c))) {
            assert!(cantila::names::ProcessType::parse(name).is_ok(), "{name:?}");
            assert!(!command.trim().is_empty(), "{name}: {command:?}");
            assert!(
                !command.chars().any(|c| c.is_control() && c != '\t'),
                "{name}: {command:?}"
            );
        }
    }
});
