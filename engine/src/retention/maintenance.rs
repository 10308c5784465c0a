//! Background maintenance: purge does not wait for an operator's cron job.
//!
//! A store opened with [`Config::maintenance_every`](crate::Config::maintenance_every)
//! set (the default: every hour) runs a compaction pass — due erasures,
//! re-keys, dead-record removal, epoch rotation and destruction — on a
//! thread of its own: the first a minute after open (or sooner, for a
//! shorter interval), then once per interval. The thread holds only a weak
//! handle, so it never keeps a dropped store open; dropping the last `Db`
//! stops it after its current pass. A failed pass is retried at the next
//! tick; what it could not do shows as overdue in `stats` and `verify`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::db::{Db, DbInner};
use crate::error::{Error, Result};

/// The wait before the first pass after open.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Starts the maintenance thread of `inner`, a pass every `every`.
pub(crate) fn start_maintenance(inner: &Arc<DbInner>, every: Duration) -> Result<()> {
    let every = every.max(Duration::from_millis(10));
    let (stop, stopped) = mpsc::channel::<()>();
    let weak = Arc::downgrade(inner);
    let handle = std::thread::Builder::new()
        .name("shredkv-maintenance".into())
        .spawn(move || {
            let mut wait = every.min(FIRST_PASS_AFTER);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                wait = every;
                let Some(inner) = weak.upgrade() else { break };
                // A failed pass is retried at the next tick; what stays
                // undone is reported as overdue by `stats` and `verify`.
                let _ = Db { inner }.compact();
            }
        })
        .map_err(|source| Error::Io {
            action: "start the maintenance thread",
            path: inner.path.clone(),
            source,
        })?;
    *inner
        .maintenance
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some((stop, handle));
    Ok(())
}
