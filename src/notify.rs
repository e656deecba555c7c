//! NOTIFY biomero_events, so followers can LISTEN instead of polling.
//!
//! Serialized appends notify in their own transaction (delivered at commit, never for a
//! rolled-back append). Concurrent appends do not: the horizon publisher (`worker.rs`) notifies
//! once per advance of an application's horizon. Either way the payload is a wake-up, not
//! data: any role may NOTIFY this channel, so listeners read the log to learn what is new.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use serde::Serialize;
use std::ffi::CString;

/// The channel appends notify.
pub const CHANNEL: &std::ffi::CStr = c"biomero_events";

/// `biomero.notify`: whether serialized appends NOTIFY. PostgreSQL serializes the commits of
/// all notifying transactions of the cluster, so writers nobody listens to can turn it off.
pub static NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register_settings() {
    GucRegistry::define_bool_guc(
        c"biomero.notify",
        c"Whether serialized biomero appends send NOTIFY biomero_events.",
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

unsafe extern "C-unwind" {
    /// commands/async.h; called directly so that no statement is parsed under the append lock.
    fn Async_Notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
}

/// Queues the notification of ids `first..=last` of `application` for the commit.
pub fn send(application: &str, first: i64, last: i64) {
    let payload = serde_json::to_string(&Appended {
        application_name: application,
        first,
        last,
    })
    .expect("a struct of strings and integers serializes");
    let payload = CString::new(payload).expect("names contain no NUL");
    // SAFETY: valid C strings for the duration of the call; Async_Notify copies them. Its
    // errors (none are expected for a short payload) become Rust panics at the boundary.
    unsafe {
        pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
            Async_Notify(CHANNEL.as_ptr(), payload.as_ptr())
        })
    };
}

/// Notifies a serialized append, unless `biomero.notify` is off.
pub fn appended(application: &str, first: i64, last: i64) {
    if NOTIFY.get() {
        send(application, first, last);
    }
}
