//! The `Last-Event-ID` header of a reconnecting deploy event stream: any bytes resume
//! after a non-negative sequence number.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let after = cantila::api::deploys::resume_after(Some(data));
    assert!(after >= 0, "{after}");
});
