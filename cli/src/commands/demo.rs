//! `shredkv demo` (placeholder while the lifecycle is written).

use anyhow::Result;

use crate::context::Global;
use crate::exit::Code;

/// Runs the demo.
pub(crate) fn run(_global: &Global) -> Result<Code> {
    Ok(Code::Ok)
}
