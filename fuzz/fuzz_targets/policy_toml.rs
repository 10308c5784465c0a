//! Retention policy files (`shredkv::Policy::from_toml_str`): no input may
//! panic; a policy that parses parses again to the same digest; an error
//! names a line and column inside the text and renders a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredkv::Policy;
use shredkv::jiff::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_toml_str(text, "fuzz.toml") {
        Ok(policy) => {
            let again = Policy::from_toml_str(text, "fuzz.toml").expect("a policy parses twice");
            assert_eq!(policy.digest(), again.digest(), "the digest is stable");
            assert!(!policy.classes().is_empty(), "a policy has classes");
            for class in policy.classes() {
                assert!(policy.class(class.name()).is_some());
                // Deadlines saturate instead of overflowing, at any start.
                for start in [Timestamp::MIN, Timestamp::UNIX_EPOCH, Timestamp::MAX] {
                    let _ = class.deadline(start);
                    let _ = class.purge_deadline(start);
                }
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
            if let Some((line, column)) = err.location() {
                let lines = text.matches('\n').count() + 1;
                assert!(
                    (1..=lines).contains(&line) && column >= 1,
                    "{message}: line {line} of {lines}, column {column}"
                );
            }
        }
    }
});
