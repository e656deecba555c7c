//! NOTIFY on append, so followers can LISTEN instead of polling.

use crate::error::Result;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use serde::Serialize;

/// The channel every append notifies. Delivered at commit, never for a rolled-back append.
pub const CHANNEL: &str = "biomero_events";

/// `biomero.notify`: whether appends NOTIFY. PostgreSQL serializes the commits of all
/// notifying transactions in a database, so writers of many applications that do not LISTEN
/// can turn it off for throughput.
pub static NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register_settings() {
    GucRegistry::define_bool_guc(
        c"biomero.notify",
        c"Whether biomero appends send NOTIFY biomero_events.",
        c"The payload is JSON: {\"application_name\": …, \"first\": id, \"last\": id}.",
        &NOTIFY,
        GucContext::Userset,
        GucFlags::default(),
    );
}

#[derive(Serialize)]
struct Appended<'a> {
    application_name: &'a str,
    first: i64,
    last: i64,
}

pub fn appended(application: &str, first: i64, last: i64) -> Result<()> {
    if !NOTIFY.get() {
        return Ok(());
    }
    let payload = serde_json::to_string(&Appended {
        application_name: application,
        first,
        last,
    })
    .expect("a struct of strings and integers serializes");
    Spi::connect_mut(|client| {
        client.update(
            "SELECT pg_notify($1, $2)",
            None,
            &[CHANNEL.into(), payload.into()],
        )?;
        Ok(())
    })
}
