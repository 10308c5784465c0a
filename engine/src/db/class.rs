//! Class handles: a retention class resolved once ([`Db::class`]), so a
//! misspelt class fails when the application starts, not on the first write
//! of that kind; every method that takes a class takes a handle or a name.

use super::{ClassEntry, Db, DbInner};
use crate::error::{Error, Result};

/// A retention class of one open store, resolved by [`Db::class`]. Cheap to
/// copy; valid for the store it came from (another store's handle is
/// refused, even for a class of the same name).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let config = shredkv::Config::new(dir.path().join("store"))
/// #     .key_file(dir.path().join("keys")).maintenance_every(None);
/// # let db = shredkv::Db::open(config)?;
/// let messages = db.class("message_content")?; // a typo fails here, at start-up
/// db.register_account("acct-1")?;
/// db.put("acct-1", messages, b"m1", b"hello")?;
/// assert_eq!(db.get("acct-1", messages, b"m1")?.as_deref(), Some(&b"hello"[..]));
/// assert!(db.class("message_contnet").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    store: [u8; 16],
    index: usize,
}

/// How a class is named in a call: by handle or by name. Implemented for
/// [`Class`] and for strings; sealed.
pub trait AsClass: sealed::Sealed {
    #[doc(hidden)]
    fn as_class(&self) -> ClassName<'_>;
}

/// A class as a call names it (see [`AsClass`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum ClassName<'a> {
    /// By name.
    Name(&'a str),
    /// By handle.
    Handle(Class),
}

/// A class a [`crate::Batch`] holds until it is applied.
#[derive(Debug, Clone)]
pub(crate) enum OwnedClass {
    Name(String),
    Handle(Class),
}

impl OwnedClass {
    pub(crate) fn of(class: &impl AsClass) -> Self {
        match class.as_class() {
            ClassName::Name(name) => Self::Name(name.to_string()),
            ClassName::Handle(handle) => Self::Handle(handle),
        }
    }
}

impl std::fmt::Display for OwnedClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Handle(handle) => write!(f, "class #{}", handle.index),
        }
    }
}

impl AsClass for &OwnedClass {
    fn as_class(&self) -> ClassName<'_> {
        (*self).as_class()
    }
}

impl AsClass for OwnedClass {
    fn as_class(&self) -> ClassName<'_> {
        match self {
            Self::Name(name) => ClassName::Name(name),
            Self::Handle(handle) => ClassName::Handle(*handle),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::OwnedClass {}
    impl Sealed for &super::OwnedClass {}
    impl Sealed for super::Class {}
    impl Sealed for &super::Class {}
    impl Sealed for &str {}
    impl Sealed for &&str {}
    impl Sealed for String {}
    impl Sealed for &String {}
}

impl AsClass for Class {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Handle(*self)
    }
}

impl AsClass for &Class {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Handle(**self)
    }
}

impl AsClass for &str {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Name(self)
    }
}

impl AsClass for &&str {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Name(self)
    }
}

impl AsClass for String {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Name(self)
    }
}

impl AsClass for &String {
    fn as_class(&self) -> ClassName<'_> {
        ClassName::Name(self)
    }
}

impl Db {
    /// The handle of the class named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownClass`] if the store's policy has no such class.
    pub fn class(&self, name: &str) -> Result<Class> {
        let inner = &self.inner;
        let entry = inner.class(name)?;
        let index = inner
            .classes
            .iter()
            .position(|c| std::ptr::eq(c, entry))
            .unwrap_or(usize::MAX);
        Ok(Class {
            store: inner.store_id,
            index,
        })
    }

    /// The name of the class `class` names.
    ///
    /// # Errors
    /// As [`Db::class`]; a handle of another store.
    pub fn class_name_of(&self, class: impl AsClass) -> Result<&str> {
        Ok(self.inner.resolve(&class)?.policy.name())
    }
}

impl DbInner {
    /// The class a call names.
    pub(crate) fn resolve(&self, class: &impl AsClass) -> Result<&ClassEntry> {
        match class.as_class() {
            ClassName::Name(name) => self.class(name),
            ClassName::Handle(handle) => {
                if handle.store != self.store_id {
                    return Err(Error::InvalidArgument {
                        what: "class handle",
                        detail: "it was made by Db::class of another store; resolve the class on this one".into(),
                    });
                }
                self.classes
                    .get(handle.index)
                    .ok_or(Error::InvalidArgument {
                        what: "class handle",
                        detail: "it names no class of this store".into(),
                    })
            }
        }
    }
}
