//! Names parsed at the API's boundary: project names, handles, hostnames (IDNA), env keys,
//! token names, process types, scopes and runtimes. A parsed value must parse again to
//! itself, so the type really is the proof of validity.
#![no_main]

use cantila::names::{
    EnvKey, Handle, Hostname, ProcessType, ProjectName, Runtime, Scope, TokenName,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ProjectName::parse(text) {
        assert_eq!(ProjectName::parse(name.as_str()).unwrap(), name);
        assert!(name.as_str().len() <= 63);
    }
    if let Ok(handle) = Handle::parse(text) {
        assert_eq!(Handle::parse(handle.as_str()).unwrap(), handle);
    }
    if let Ok(host) = Hostname::parse(text) {
        // Stored in ASCII (punycode), lowercase, and stable under a second parse.
        assert!(host.as_str().is_ascii(), "{host}");
        assert_eq!(host.as_str(), host.as_str().to_ascii_lowercase());
        assert!(host.as_str().len() <= 253, "{host}");
        assert!(
            host.as_str().parse::<std::net::IpAddr>().is_err(),
            "an IP address: {host}"
        );
        let again = Hostname::parse(host.as_str()).expect("a parsed hostname parses again");
        assert_eq!(again.as_str(), host.as_str());
    }
    if let Ok(key) = EnvKey::parse(text) {
        assert_eq!(EnvKey::parse(key.as_str()).unwrap(), key);
    }
    if let Ok(name) = TokenName::parse(text) {
        assert_eq!(TokenName::parse(name.as_str()).unwrap(), name);
    }
    if let Ok(process) = ProcessType::parse(text) {
        assert_eq!(ProcessType::parse(process.as_str()).unwrap(), process);
    }
    let _ = Scope::parse(text);
    let _ = Runtime::parse(text);
});
