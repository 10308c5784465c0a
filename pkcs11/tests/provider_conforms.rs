//! The PKCS#11 provider passes the provider conformance suite on SoftHSM2,
//! keeps stores apart on one token, keeps its keys inside the token, and
//! tells "cannot reach the token" apart from "the key is gone".

mod support;

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use shredkv_crypto::internal::conformance;
use shredkv_crypto::{DataKey, KeyProvider, ProviderError, WrapContext};
use shredkv_pkcs11::{Pin, Pkcs11Config, Pkcs11Error, Pkcs11KeyProvider, StoreLabel};

fn open(token: &str, store: &str) -> Pkcs11KeyProvider {
    Pkcs11KeyProvider::open_or_create(support::config(token, store))
        .unwrap_or_else(|err| panic!("open {token}/{store}: {err}"))
}

#[test]
fn the_pkcs11_provider_conforms() {
    support::new_token("conformance");
    conformance::run_all(|| open("conformance", "store-a"));
    // A second store on the same token starts empty and passes too.
    conformance::run_all(|| open("conformance", "store-b"));
}

#[test]
fn stores_on_one_token_are_kept_apart() {
    support::new_token("two-stores");
    let a = open("two-stores", "a");
    let b = open("two-stores", "b");
    let ea = a.create_epoch().expect("create in a");
    let eb = b.create_epoch().expect("create in b");
    assert_eq!(ea, eb, "each store counts its own epochs");
    let wrapped = a
        .wrap(ea, &WrapContext::StoreSecret, &DataKey::generate())
        .expect("wrap");
    assert!(
        matches!(
            b.unwrap(&WrapContext::StoreSecret, &wrapped),
            Err(ProviderError::Authentication)
        ),
        "b's epoch 1 is another key than a's"
    );
    a.destroy_epoch(ea).expect("destroy in a");
    assert_eq!(
        b.live_epochs().expect("live"),
        vec![eb],
        "b keeps its epoch"
    );
    assert!(a.live_epochs().expect("live").is_empty());
}

#[test]
fn epoch_keys_stay_in_the_token() {
    support::new_token("key-attributes");
    let provider = open("key-attributes", "s");
    provider.create_epoch().expect("create");
    let pkcs11 = Pkcs11::new(support::module()).expect("module");
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .is_ok_and(|i| i.label().trim_end() == "key-attributes")
        })
        .expect("token");
    let session = pkcs11.open_ro_session(slot).expect("session");
    match session.login(UserType::User, Some(&AuthPin::from(support::USER_PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(err) => panic!("login: {err}"),
    }
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"shredkv/s/epoch/1".to_vec()),
        ])
        .expect("find");
    assert_eq!(keys.len(), 1, "epoch 1's key is labelled for its store");
    let attributes = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::ValueLen,
            ],
        )
        .expect("attributes");
    for attribute in attributes {
        match attribute {
            Attribute::Token(v) => assert!(v, "a token object"),
            Attribute::Sensitive(v) => assert!(v, "sensitive"),
            Attribute::Extractable(v) => assert!(!v, "not extractable"),
            Attribute::NeverExtractable(v) => assert!(v, "never was extractable"),
            Attribute::ValueLen(len) => assert_eq!(u64::from(len), 32, "AES-256"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The value itself is not readable.
    let value = session.get_attributes(keys[0], &[AttributeType::Value]);
    assert!(
        !matches!(&value, Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "the key's value was readable: {value:?}"
    );
}

#[test]
fn an_unreachable_token_is_unavailable_never_destroyed() {
    support::new_token("reachable");
    let missing_token =
        Pkcs11KeyProvider::open(support::config("no-such-token", "s")).expect_err("no such token");
    assert!(matches!(missing_token, Pkcs11Error::TokenNotFound { .. }));
    assert!(
        missing_token.to_string().contains("no-such-token"),
        "{missing_token}"
    );
    let as_provider = missing_token.into_provider_error();
    assert!(
        matches!(as_provider, ProviderError::Unavailable { .. }),
        "{as_provider:?}"
    );
    let missing_module = Pkcs11KeyProvider::open(Pkcs11Config::new(
        "/nonexistent/libpkcs11.so",
        "reachable",
        StoreLabel::new("s").expect("label"),
        Pin::new(support::USER_PIN.into()),
    ))
    .expect_err("no module");
    assert!(
        matches!(missing_module, Pkcs11Error::Module { .. }),
        "{missing_module}"
    );
    assert!(matches!(
        missing_module.into_provider_error(),
        ProviderError::Unavailable { .. }
    ));
    let not_created = Pkcs11KeyProvider::open(support::config("reachable", "never-made"))
        .expect_err("open does not create");
    assert!(
        matches!(not_created, Pkcs11Error::StoreNotFound { .. }),
        "{not_created}"
    );
}

#[test]
fn a_wrong_pin_is_refused_and_no_pin_is_ever_printed() {
    support::new_token("pins");
    let wrong = Pkcs11KeyProvider::open(Pkcs11Config::new(
        support::module(),
        "pins",
        StoreLabel::new("s").expect("label"),
        Pin::new("0000-wrong".into()),
    ))
    .expect_err("wrong PIN");
    assert!(matches!(wrong, Pkcs11Error::Login { .. }), "{wrong}");
    assert!(!wrong.to_string().contains("0000-wrong"));
    let config = support::config("pins", "s");
    assert!(!format!("{config:?}").contains(support::USER_PIN));
    let provider = Pkcs11KeyProvider::open_or_create(config).expect("open");
    for shown in [format!("{provider:?}"), provider.describe()] {
        assert!(!shown.contains(support::USER_PIN), "{shown}");
        assert!(shown.contains("pins") && shown.contains('s'), "{shown}");
    }
    assert!(
        provider.describe().contains("libsofthsm2")
            || std::env::var_os("SHREDKV_PKCS11_MODULE").is_some()
    );
}
