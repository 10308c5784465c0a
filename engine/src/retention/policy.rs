//! Temporary minimal policy (replaced by the full parser on merge).
#![allow(missing_docs)]

use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRole {
    Controller,
    Processor,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockStart {
    Write,
    AccountClosure,
    MarketingOptOut,
    ManualRelease,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionRule {
    EraseNow,
    RetainUntilDeadline,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyMode {
    #[default]
    Blinded,
    Ordered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    days: i64,
}
impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} days", self.days)
    }
}
impl Retention {
    pub fn add_to(self, start: Timestamp) -> Option<Timestamp> {
        start
            .checked_add(jiff::SignedDuration::from_hours(24 * self.days))
            .ok()
    }
}

#[derive(Debug, Clone)]
pub struct ClassPolicy {
    pub name: String,
    pub role: DataRole,
    pub clock: ClockStart,
    pub retain: Option<Retention>,
    pub purge_window: Retention,
    pub on_deletion_request: DeletionRule,
    pub max_customer_ttl: Option<Retention>,
    pub keys: KeyMode,
    pub legal_basis: String,
    pub clause: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    classes: Vec<ClassPolicy>,
}

#[derive(Debug)]
pub struct PolicyError(String);
impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PolicyError {}

impl Policy {
    pub fn default_policy() -> Self {
        let class =
            |name: &str, clock, retain: Option<i64>, rule, ttl: Option<i64>, keys| ClassPolicy {
                name: name.into(),
                role: DataRole::Controller,
                clock,
                retain: retain.map(|days| Retention { days }),
                purge_window: Retention { days: 30 },
                on_deletion_request: rule,
                max_customer_ttl: ttl.map(|days| Retention { days }),
                keys,
                legal_basis: String::new(),
                clause: String::new(),
            };
        Self {
            classes: vec![
                class(
                    "account_profile",
                    ClockStart::AccountClosure,
                    Some(60),
                    DeletionRule::EraseNow,
                    None,
                    KeyMode::Blinded,
                ),
                class(
                    "invoice",
                    ClockStart::AccountClosure,
                    Some(3650),
                    DeletionRule::RetainUntilDeadline,
                    None,
                    KeyMode::Ordered,
                ),
                class(
                    "support_communication",
                    ClockStart::AccountClosure,
                    Some(1095),
                    DeletionRule::EraseNow,
                    None,
                    KeyMode::Blinded,
                ),
                class(
                    "message_content",
                    ClockStart::Write,
                    None,
                    DeletionRule::EraseNow,
                    Some(3650),
                    KeyMode::Blinded,
                ),
                class(
                    "marketing_contact",
                    ClockStart::MarketingOptOut,
                    Some(3),
                    DeletionRule::EraseNow,
                    None,
                    KeyMode::Blinded,
                ),
            ],
        }
    }
    pub fn classes(&self) -> &[ClassPolicy] {
        &self.classes
    }
    pub fn class(&self, name: &str) -> Option<&ClassPolicy> {
        self.classes.iter().find(|c| c.name == name)
    }
    pub fn digest(&self) -> [u8; 32] {
        [0; 32]
    }
}
