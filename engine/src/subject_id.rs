//! What a subject id may be, and the one form of it the store tags.
//!
//! The store keeps no subject id, only its keyed tag, so an id spelled two
//! ways would become two subjects that can never be matched again, and an
//! erasure requested under one spelling would miss the other. Ids are
//! therefore taken in Unicode NFC (canonically equivalent spellings — an
//! "é" typed as one code point or as "e" plus a combining accent — name one
//! subject) and refused when they cannot be a deliberate identifier:
//!
//! - empty, or white space only;
//! - starting or ending with white space (`" alice"` is not `"alice"`, and
//!   is almost always a bug upstream);
//! - containing a control character (`\0`, `\n`, U+0080–U+009F, ...);
//! - longer than [`MAX_SUBJECT_ID_LEN`] bytes of UTF-8 (after NFC).
//!
//! Ids are case-sensitive and otherwise taken as given (no case folding, no
//! compatibility mapping): `Alice` and `alice` are two subjects. The error
//! never repeats the id (it is personal data).

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::error::Error;

/// The longest subject id accepted, in bytes of UTF-8 after NFC
/// normalisation (an e-mail address is at most 254).
pub const MAX_SUBJECT_ID_LEN: usize = 512;

fn refused(detail: String) -> Error {
    Error::InvalidArgument {
        what: "subject id",
        detail,
    }
}

/// The canonical (NFC) form of `id`, or why it is refused.
pub(crate) fn canonical(id: &str) -> Result<Cow<'_, str>, Error> {
    // Every read and write comes here: printable ASCII is already NFC and
    // needs only its ends and length checked, in one pass over its bytes.
    let bytes = id.as_bytes();
    // Ends are printable and not a space; everything between is printable.
    if let (Some(b'!'..=b'~'), Some(b'!'..=b'~')) = (bytes.first(), bytes.last())
        && bytes.len() <= MAX_SUBJECT_ID_LEN
        && bytes.iter().all(|b| (b' '..=b'~').contains(b))
    {
        return Ok(Cow::Borrowed(id));
    }
    canonical_general(id)
}

/// [`canonical`] for any id (the fast path's answer must be this one's).
fn canonical_general(id: &str) -> Result<Cow<'_, str>, Error> {
    if id.trim().is_empty() {
        return Err(refused(if id.is_empty() {
            "it is empty".into()
        } else {
            "it is only white space".into()
        }));
    }
    if id.trim() != id {
        return Err(refused(
            "it starts or ends with white space; trim it (ids are compared exactly)".into(),
        ));
    }
    if let Some(at) = id.chars().position(char::is_control) {
        return Err(refused(format!(
            "it contains a control character (at character {at}); ids are identifiers, not text"
        )));
    }
    let canonical = if is_nfc_quick(id.chars()) == IsNormalized::Yes {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(id.nfc().collect::<String>())
    };
    if canonical.len() > MAX_SUBJECT_ID_LEN {
        return Err(refused(format!(
            "it is {} bytes long in UTF-8; at most {MAX_SUBJECT_ID_LEN} are allowed",
            canonical.len()
        )));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(id: &str) -> String {
        match canonical(id) {
            Err(Error::InvalidArgument { what, detail }) => {
                assert_eq!(what, "subject id");
                assert!(!id.is_empty() && !detail.contains(id) || id.is_empty());
                detail
            }
            other => panic!("{id:?}: expected a refusal, got {other:?}"),
        }
    }

    /// The printable-ASCII fast path answers as the general rules do, for
    /// every id of up to four characters over the ASCII characters that
    /// matter (space, tab, line feed, other controls, DEL, printable ones),
    /// and at the length limit.
    #[test]
    fn the_ascii_fast_path_agrees_with_the_general_rules() {
        let alphabet = [' ', '\t', '\n', '\x1f', '\x7f', '!', 'a', '~'];
        let mut ids = vec![String::new()];
        let mut frontier = ids.clone();
        for _ in 0..4 {
            let next: Vec<String> = frontier
                .iter()
                .flat_map(|id| alphabet.iter().map(move |c| format!("{id}{c}")))
                .collect();
            ids.extend(next.iter().cloned());
            frontier = next;
        }
        for len in [
            MAX_SUBJECT_ID_LEN - 1,
            MAX_SUBJECT_ID_LEN,
            MAX_SUBJECT_ID_LEN + 1,
        ] {
            ids.push("a".repeat(len));
            ids.push(format!("{} ", "a".repeat(len - 1)));
        }
        for id in &ids {
            let fast = canonical(id).map_err(|e| e.to_string());
            let general = canonical_general(id).map_err(|e| e.to_string());
            assert_eq!(fast, general, "{id:?}");
        }
        assert!(ids.len() > 4_000);
    }

    #[test]
    fn bad_ids_are_refused_with_the_rule_they_break() {
        assert!(detail("").contains("empty"));
        assert!(detail("   ").contains("only white space"));
        assert!(detail("\u{3000}").contains("only white space"));
        assert!(detail(" alice").contains("white space"));
        assert!(detail("alice\n").contains("white space"));
        assert!(detail("a\0b").contains("control character (at character 1)"));
        assert!(detail("a\u{85}b").contains("control character"));
        assert!(detail("a\u{1b}[31mb").contains("control character"));
        let long = "x".repeat(MAX_SUBJECT_ID_LEN + 1);
        assert!(detail(&long).contains("513 bytes"));
        assert!(detail(&"x".repeat(1 << 20)).contains("at most 512"));
    }

    #[test]
    fn good_ids_pass_and_canonically_equal_spellings_become_one() {
        for id in ["alice", "a b", "user-42@example.com", "Zoë", "名前", "x"] {
            assert_eq!(canonical(id).expect("accepted"), id);
        }
        assert_eq!(
            canonical(&"x".repeat(MAX_SUBJECT_ID_LEN))
                .expect("at the limit")
                .len(),
            512
        );
        let composed = "Zo\u{eb}"; // ë as one code point (NFC)
        let decomposed = "Zoe\u{308}"; // e + combining diaeresis (NFD)
        assert_ne!(composed, decomposed);
        assert_eq!(canonical(decomposed).expect("accepted"), composed);
        assert!(matches!(
            canonical(composed).expect("accepted"),
            Cow::Borrowed(_)
        ));
        // Case and compatibility forms are kept apart.
        assert_ne!(
            canonical("Alice").expect("ok"),
            canonical("alice").expect("ok")
        );
        assert_eq!(canonical("\u{fb01}le").expect("ok"), "\u{fb01}le");
    }
}
