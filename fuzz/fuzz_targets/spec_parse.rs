//! Fuzzes the spec reader on arbitrary bytes: parsing, sweep expansion and `-a` overrides must never panic, every
//! refusal must carry a one-line message naming the source, and whatever is accepted must be valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rush::core::spec::{Spec, apply_overrides};

fuzz_target!(|data: &[u8]| {
    match Spec::load("fuzz.yaml", data) {
        Ok(specs) => {
            assert!(!specs.is_empty());
            for spec in &specs {
                assert!(spec.grid.is_none() && spec.random.is_none());
                assert_eq!(spec.validate("fuzz.yaml"), Ok(()));
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.yaml") && !message.contains('\n'), "{message}");
        }
    }
    if let Ok(args) = std::str::from_utf8(data) {
        let base = Spec { dataset: "emoji".into(), ..Spec::default() };
        match apply_overrides(&base, args) {
            Ok(spec) => assert_eq!(spec.validate("-a"), Ok(())),
            Err(e) => assert!(e.to_string().starts_with("-a"), "{e}"),
        }
    }
});
