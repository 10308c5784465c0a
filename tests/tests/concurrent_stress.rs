//! Concurrency: 8 real threads share one `Db` (on sled and on redb) and mix
//! put, get, delete, scan, atomic batches, shreds of one class or of a whole
//! subject, and re-registration, each over its own 8 of 64 subjects (two
//! accounts with three end users each), checking every answer against a
//! model of its own. At the end, and again after closing and reopening,
//! the store holds exactly what the models say: no write lost, no erased
//! record back, no record of one thread's subjects visible in another's.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;

use shredkv::{Batch, Classes, Db, Error};
use shredkv_tests::{CLASSES, Rng, for_each_backend};

const THREADS: usize = 8;
const ACCOUNTS_PER_THREAD: usize = 2;
const USERS_PER_ACCOUNT: usize = 3;
const OPS_PER_THREAD: usize = 1500;
const KEYS: usize = 10;

/// One subject of the model.
#[derive(Debug, Clone)]
struct Subject {
    id: String,
    /// Index of its account among the thread's subjects.
    parent: Option<usize>,
    erased: bool,
    erased_classes: BTreeSet<&'static str>,
    /// Re-registered after an erasure at least once.
    re_registered: bool,
    data: BTreeMap<(&'static str, Vec<u8>), Vec<u8>>,
}

impl Subject {
    /// The error a read or write of `class` must give, if any.
    fn gate(&self, class: &'static str) -> Option<Option<&'static str>> {
        if self.erased {
            Some(None)
        } else if self.erased_classes.contains(class) {
            Some(Some(class))
        } else {
            None
        }
    }

    fn records(&self, class: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.data
            .iter()
            .filter(|((c, _), _)| *c == class)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One thread's subjects and what they must hold.
#[derive(Debug, Clone)]
struct Model {
    subjects: Vec<Subject>,
}

impl Model {
    fn new(thread: usize) -> Self {
        let mut subjects = Vec::new();
        for a in 0..ACCOUNTS_PER_THREAD {
            let account = subjects.len();
            subjects.push(Subject {
                id: format!("t{thread}-a{a}"),
                parent: None,
                erased: false,
                erased_classes: BTreeSet::new(),
                re_registered: false,
                data: BTreeMap::new(),
            });
            for u in 0..USERS_PER_ACCOUNT {
                subjects.push(Subject {
                    id: format!("t{thread}-a{a}-u{u}"),
                    parent: Some(account),
                    erased: false,
                    erased_classes: BTreeSet::new(),
                    re_registered: false,
                    data: BTreeMap::new(),
                });
            }
        }
        Self { subjects }
    }

    /// A subject and, for an account, its end users.
    fn family(&self, s: usize) -> Vec<usize> {
        let mut out = vec![s];
        out.extend((0..self.subjects.len()).filter(|&u| self.subjects[u].parent == Some(s)));
        out
    }
}

fn expect_erased<T: std::fmt::Debug>(
    result: shredkv::Result<T>,
    scope: Option<&'static str>,
    what: &str,
) {
    match result {
        Err(Error::Erased { class, .. }) => assert_eq!(class.as_deref(), scope, "{what}"),
        other => panic!("{what}: expected Error::Erased({scope:?}), got {other:?}"),
    }
}

fn sorted(records: Vec<shredkv::Record>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = records.into_iter().map(|r| (r.key, r.value)).collect();
    out.sort();
    out
}

/// One thread's random workload, checked against its model as it goes.
fn work(db: &Db, thread: usize, seed: u64) -> Model {
    let mut model = Model::new(thread);
    let mut rng = Rng::new(seed);
    for s in &model.subjects {
        match s.parent {
            None => db.register_account(&s.id),
            Some(p) => db.register_end_user(&s.id, &model.subjects[p].id),
        }
        .expect("register");
    }
    for op in 0..OPS_PER_THREAD {
        let s = rng.below(model.subjects.len());
        let class = CLASSES[rng.below(CLASSES.len())];
        let key = format!("k{}", rng.below(KEYS)).into_bytes();
        let value = format!("t{thread}-op{op}").into_bytes();
        let what = format!("{} thread {thread} op {op}", db.backend());
        let subject = &model.subjects[s];
        let id = subject.id.clone();
        let gate = subject.gate(class);
        match rng.below(100) {
            0..40 => {
                let result = db.put(&id, class, &key, &value);
                match gate {
                    Some(scope) => expect_erased(result, scope, &what),
                    None => {
                        result.unwrap_or_else(|e| panic!("{what}: put: {e}"));
                        model.subjects[s].data.insert((class, key), value);
                    }
                }
            }
            40..60 => {
                let result = db.get(&id, class, &key);
                match gate {
                    Some(scope) => expect_erased(result, scope, &what),
                    None => assert_eq!(
                        result.unwrap_or_else(|e| panic!("{what}: get: {e}")),
                        model.subjects[s].data.get(&(class, key)).cloned(),
                        "{what}: get {id}/{class}"
                    ),
                }
            }
            60..73 => {
                let result = db.delete(&id, class, &key);
                match gate {
                    Some(scope) => expect_erased(result, scope, &what),
                    None => {
                        let existed = result.unwrap_or_else(|e| panic!("{what}: delete: {e}"));
                        let modelled = model.subjects[s].data.remove(&(class, key)).is_some();
                        assert_eq!(existed, modelled, "{what}: delete {id}/{class}");
                    }
                }
            }
            73..85 => {
                let result = db.scan(&id, class);
                match gate {
                    Some(scope) => expect_erased(result, scope, &what),
                    None => assert_eq!(
                        sorted(result.unwrap_or_else(|e| panic!("{what}: scan: {e}"))),
                        model.subjects[s].records(class),
                        "{what}: scan {id}/{class}"
                    ),
                }
            }
            85..94 => {
                // An atomic batch over two of the thread's subjects.
                let other = rng.below(model.subjects.len());
                let other_class = CLASSES[rng.below(CLASSES.len())];
                let other_key = format!("k{}", rng.below(KEYS)).into_bytes();
                let delete_other = rng.below(2) == 0;
                let mut batch = Batch::new();
                batch.put(&id, class, &key, &value);
                let other_id = model.subjects[other].id.clone();
                if delete_other {
                    batch.delete(&other_id, other_class, &other_key);
                } else {
                    batch.put(&other_id, other_class, &other_key, &value);
                }
                let result = db.apply(batch);
                match gate.or(model.subjects[other].gate(other_class)) {
                    Some(scope) => expect_erased(result, scope, &what),
                    None => {
                        result.unwrap_or_else(|e| panic!("{what}: batch: {e}"));
                        model.subjects[s].data.insert((class, key), value.clone());
                        let data = &mut model.subjects[other].data;
                        if delete_other {
                            data.remove(&(other_class, other_key));
                        } else {
                            data.insert((other_class, other_key), value);
                        }
                    }
                }
            }
            94..97 => {
                let whole = rng.below(2) == 0;
                let classes = if whole {
                    Classes::All
                } else {
                    Classes::Only(std::slice::from_ref(&class))
                };
                db.shred(&id, classes)
                    .unwrap_or_else(|e| panic!("{what}: shred: {e}"));
                for member in model.family(s) {
                    let m = &mut model.subjects[member];
                    if m.erased {
                        continue;
                    }
                    if whole {
                        m.erased = true;
                        m.data.clear();
                    } else {
                        m.erased_classes.insert(class);
                        m.data.retain(|(c, _), _| *c != class);
                    }
                }
            }
            _ => {
                let result = db.re_register(&id);
                let parent_erased = subject.parent.is_some_and(|p| model.subjects[p].erased);
                let anything_erased = subject.erased || !subject.erased_classes.is_empty();
                if parent_erased || !anything_erased {
                    assert!(
                        matches!(result, Err(Error::SubjectConflict { .. })),
                        "{what}: re_register {id}: {result:?}"
                    );
                } else {
                    result.unwrap_or_else(|e| panic!("{what}: re_register {id}: {e}"));
                    let m = &mut model.subjects[s];
                    m.erased = false;
                    m.erased_classes.clear();
                    m.re_registered = true;
                }
            }
        }
    }
    model
}

/// The whole store against every thread's model.
fn verify(db: &Db, models: &[Model], phase: &str) {
    for model in models {
        for subject in &model.subjects {
            for class in CLASSES {
                let what = format!("{} {phase}: {}/{class}", db.backend(), subject.id);
                match subject.gate(class) {
                    Some(scope) => expect_erased(db.scan(&subject.id, class), scope, &what),
                    None => {
                        assert_eq!(
                            sorted(db.scan(&subject.id, class).expect("scan")),
                            subject.records(class),
                            "{what}"
                        );
                        for k in 0..KEYS {
                            let key = format!("k{k}").into_bytes();
                            assert_eq!(
                                db.get(&subject.id, class, &key).expect("get"),
                                subject.data.get(&(class, key)).cloned(),
                                "{what} k{k}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn eight_threads_with_models_agree_with_the_store_before_and_after_reopen() {
    for_each_backend(|store| {
        let db = store.open();
        let models: Vec<Model> = thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let db = db.clone();
                    scope.spawn(move || work(&db, t, 0x5EED_0000 + t as u64))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker thread"))
                .collect()
        });
        let shredded: usize = models
            .iter()
            .flat_map(|m| &m.subjects)
            .filter(|s| s.erased || !s.erased_classes.is_empty())
            .count();
        let records: usize = models
            .iter()
            .flat_map(|m| &m.subjects)
            .map(|s| s.data.len())
            .sum();
        assert!(shredded > 0 && records > 100, "{shredded} {records}");
        eprintln!("{shredded} subjects with erasures, {records} live records");
        verify(&db, &models, "at the end");
        drop(db);
        let db = store.open();
        verify(&db, &models, "after reopen");
    });
}
