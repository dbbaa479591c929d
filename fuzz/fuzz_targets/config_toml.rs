//! The config file: any text through the TOML parser and then validation, which must
//! answer an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = cantila::config::Config::parse(text) {
        let _ = config.validate();
    }
});
