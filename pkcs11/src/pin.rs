//! The token's user PIN, held so that it never reaches a log.

use std::fmt;

use zeroize::Zeroizing;

/// A token's user PIN. Zeroized on drop; its `Debug` prints no digit of it,
/// and it has no `Display`, `Clone` or `PartialEq`.
///
/// ```
/// use shredkv_pkcs11::Pin;
///
/// let pin = Pin::new(String::from("1234"));
/// assert_eq!(format!("{pin:?}"), "Pin(..)");
/// ```
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Takes ownership of `pin` (the caller's copy is moved, not copied).
    pub fn new(pin: String) -> Self {
        Self(Zeroizing::new(pin))
    }

    /// Reads a PIN from the first line of `text` (as a PIN file holds it),
    /// without its line ending; `None` if that line is empty.
    pub fn from_file_text(text: &str) -> Option<Self> {
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        (!line.is_empty()).then(|| Self::new(line.to_owned()))
    }

    /// The PIN as cryptoki takes it (itself zeroized on drop).
    pub(crate) fn auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_pin_and_files_give_their_first_line() {
        let pin = Pin::new("s3cret-987".into());
        assert!(!format!("{pin:?}").contains("987"));
        let from_file = Pin::from_file_text("4321\r\nignored\n").expect("a pin");
        assert_eq!(from_file.0.as_str(), "4321");
        assert!(Pin::from_file_text("\nsecond line\n").is_none());
        assert!(Pin::from_file_text("").is_none());
    }
}
