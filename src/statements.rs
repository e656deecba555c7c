//! The SQL the extension runs, as named statements, and the snapshot each execution reads with.
//!
//! Every statement is prepared once per backend and kept (`SPI_keepplan`), so no call parses or
//! plans SQL while it holds an application's append lock. Each execution says which snapshot it
//! reads with, because that choice is what the guarantees rest on:
//!
//! * [`Snapshot::Caller`]: the caller's snapshot, read-only. Reads use it, so a read sees what
//!   the statement that called it sees, assigns no transaction id and works on a standby.
//! * [`Snapshot::Current`]: what a statement of the caller's transaction would use (a new
//!   snapshot per statement in READ COMMITTED, the transaction's in REPEATABLE READ and
//!   SERIALIZABLE). Writes whose conflicts must respect the isolation level use it.
//! * [`Snapshot::Latest`]: everything committed now, whatever the isolation level. Used after
//!   taking a lock, to see what the previous holder committed, and for the registry.

use crate::error::{Error, Result};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::FromDatum;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

/// One SQL statement with the types of its parameters.
pub struct Statement {
    pub name: &'static str,
    pub text: &'static str,
    pub parameters: &'static [Oid],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshot {
    Caller,
    Current,
    Latest,
}

use pg_sys::{
    BYTEAARRAYOID, INT4OID, INT8ARRAYOID, INT8OID, OIDOID, TEXTARRAYOID, TEXTOID, UUIDARRAYOID,
};

/// The registry row of one application, by name.
pub const FIND_APPLICATION: Statement = Statement {
    name: "find_application",
    text: "
        SELECT application_id, append_mode, restricted_to::oid, published_horizon
        FROM biomero.application_registry
        WHERE application_name = $1",
    parameters: &[TEXTOID],
};

/// Registers a name; a name registered concurrently is left alone (found again afterwards).
pub const REGISTER_APPLICATION: Statement = Statement {
    name: "register_application",
    text: "
        INSERT INTO biomero.application_registry (application_name)
        VALUES ($1)
        ON CONFLICT (application_name) DO NOTHING",
    parameters: &[TEXTOID],
};

pub const APPLICATION_NAMES: Statement = Statement {
    name: "application_names",
    text: "
        SELECT application_id, application_name
        FROM biomero.application_registry
        WHERE application_id = ANY ($1::int4[])",
    parameters: &[pg_sys::INT4ARRAYOID],
};

/// Sets the mode. A switch to concurrent mode publishes for standbys at most `$3` (below every
/// id in flight) and never more than was published: listeners were woken up to that, and
/// the publisher announces from there.
pub const SET_APPEND_MODE: Statement = Statement {
    name: "set_append_mode",
    text: "
        UPDATE biomero.application_registry
        SET append_mode = $2,
            published_horizon = CASE WHEN $2 = 'concurrent'
                                     THEN least(published_horizon, $3)
                                     ELSE published_horizon END
        WHERE application_id = $1",
    parameters: &[INT4OID, TEXTOID, INT8OID],
};

pub const SET_RESTRICTION: Statement = Statement {
    name: "set_restriction",
    text: "
        UPDATE biomero.application_registry
        SET restricted_to = $2::regrole
        WHERE application_id = $1",
    parameters: &[INT4OID, OIDOID],
};

/// Publishes a horizon for readers on standbys (NULL: nothing in flight, read everything). A
/// NULL computed before a switch to concurrent mode committed never overwrites the horizon the
/// switch published (the condition is checked again on the row's latest version).
pub const PUBLISH_HORIZON: Statement = Statement {
    name: "publish_horizon",
    text: "
        UPDATE biomero.application_registry
        SET published_horizon = $2
        WHERE application_id = $1 AND published_horizon IS DISTINCT FROM $2
          AND ($2 IS NOT NULL OR append_mode = 'serialized')",
    parameters: &[INT4OID, INT8OID],
};

/// An application's name, mode and published horizon, its row locked for the horizon
/// publisher; no row when another transaction holds it (a mode change in progress), so that
/// the publisher goes on with the other applications.
pub const PUBLISHED_HORIZON: Statement = Statement {
    name: "published_horizon",
    text: "
        SELECT application_name, append_mode, published_horizon
        FROM biomero.application_registry
        WHERE application_id = $1
        FOR UPDATE SKIP LOCKED",
    parameters: &[INT4OID],
};

/// Takes back the horizon published for standbys of a serialized application with nothing in
/// flight (they read everything); returns what was published, if anything.
pub const CLEAR_HORIZON: Statement = Statement {
    name: "clear_horizon",
    text: "
        WITH cleared AS (
            SELECT application_id, published_horizon
            FROM biomero.application_registry
            WHERE application_id = $1 AND published_horizon IS NOT NULL
              AND append_mode = 'serialized'
            FOR UPDATE)
        UPDATE biomero.application_registry AS r
        SET published_horizon = NULL
        FROM cleared
        WHERE r.application_id = cleared.application_id
        RETURNING cleared.published_horizon",
    parameters: &[INT4OID],
};

/// The highest stored notification id of an application: one descent of the primary key.
pub const HEAD: Statement = Statement {
    name: "head",
    text: "
        SELECT max(notification_id)
        FROM biomero.events
        WHERE application_name = $1",
    parameters: &[TEXTOID],
};

/// Inserts one event with id `$2`.
pub const INSERT_EVENT: Statement = Statement {
    name: "insert_event",
    text: "
        INSERT INTO biomero.events
            (application_name, notification_id, originator_id, originator_version, topic, state)
        VALUES ($1, $2, $3, $4, $5, $6)",
    parameters: &[
        TEXTOID,
        INT8OID,
        pg_sys::UUIDOID,
        INT8OID,
        TEXTOID,
        pg_sys::BYTEAOID,
    ],
};

/// Inserts a batch with consecutive ids from `$2`. A duplicate aggregate version raises 23505,
/// which the caller rewords; nothing else can conflict.
pub const INSERT_EVENTS: Statement = Statement {
    name: "insert_events",
    text: "
        INSERT INTO biomero.events
            (application_name, notification_id, originator_id, originator_version, topic, state)
        SELECT $1, $2 + (e.ordinality - 1), e.originator_id, e.originator_version, e.topic, e.state
        FROM unnest($3::uuid[], $4::int8[], $5::text[], $6::bytea[])
            WITH ORDINALITY AS e (originator_id, originator_version, topic, state, ordinality)",
    parameters: &[
        TEXTOID,
        INT8OID,
        UUIDARRAYOID,
        INT8ARRAYOID,
        TEXTARRAYOID,
        BYTEAARRAYOID,
    ],
};

/// Moves a follower's position forward; no row back means it was already at or past it.
pub const ADVANCE_POSITION: Statement = Statement {
    name: "advance_position",
    text: "
        INSERT INTO biomero.tracking AS t
            (application_name, upstream_application_name, notification_id)
        VALUES ($1, $2, $3)
        ON CONFLICT (application_name, upstream_application_name) DO UPDATE
            SET notification_id = excluded.notification_id
            WHERE t.notification_id < excluded.notification_id
        RETURNING true",
    parameters: &[TEXTOID, TEXTOID, INT8OID],
};

pub const POSITION: Statement = Statement {
    name: "position",
    text: "
        SELECT notification_id
        FROM biomero.tracking
        WHERE application_name = $1 AND upstream_application_name = $2",
    parameters: &[TEXTOID, TEXTOID],
};

pub const SET_POSITION: Statement = Statement {
    name: "set_position",
    text: "
        INSERT INTO biomero.tracking AS t
            (application_name, upstream_application_name, notification_id)
        VALUES ($1, $2, $3)
        ON CONFLICT (application_name, upstream_application_name) DO UPDATE
            SET notification_id = excluded.notification_id",
    parameters: &[TEXTOID, TEXTOID, INT8OID],
};

pub const FORGET_POSITION: Statement = Statement {
    name: "forget_position",
    text: "
        DELETE FROM biomero.tracking
        WHERE application_name = $1 AND upstream_application_name = $2",
    parameters: &[TEXTOID, TEXTOID],
};

/// The upstreams a follower has a position on, in name order (the order their claims are
/// taken in when every position is forgotten).
pub const UPSTREAMS_OF: Statement = Statement {
    name: "upstreams_of",
    text: "
        SELECT upstream_application_name
        FROM biomero.tracking
        WHERE application_name = $1
        ORDER BY upstream_application_name",
    parameters: &[TEXTOID],
};

/// One aggregate's events by version in `$order`: one statement per order, so that each
/// walks the unique index in its own direction.
macro_rules! aggregate_events {
    ($name:literal, $order:literal) => {
        Statement {
            name: $name,
            text: concat!(
                "
        SELECT notification_id, originator_id, originator_version, topic, state
        FROM biomero.events
        WHERE application_name = $1 AND originator_id = $2
          AND originator_version > coalesce($3, -1)
          AND originator_version <= coalesce($4, 9223372036854775807)
        ORDER BY originator_version ",
                $order,
                "
        LIMIT $5"
            ),
            parameters: &[TEXTOID, pg_sys::UUIDOID, INT8OID, INT8OID, INT8OID],
        }
    };
}

pub const AGGREGATE_EVENTS_ASCENDING: Statement =
    aggregate_events!("aggregate_events_ascending", "ASC");
pub const AGGREGATE_EVENTS_DESCENDING: Statement =
    aggregate_events!("aggregate_events_descending", "DESC");

thread_local! {
    /// This backend's kept plans, by statement name.
    static PLANS: RefCell<HashMap<&'static str, pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

fn plan(statement: &'static Statement) -> Result<pg_sys::SPIPlanPtr> {
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(statement.name).copied()) {
        return Ok(plan);
    }
    let text = CString::new(statement.text).expect("statement texts contain no NUL");
    // SAFETY: inside an SPI connection (callers hold one); the text and types outlive the call.
    // A generic plan, made once: a custom plan would be planned again at every execution.
    let plan = unsafe {
        pg_sys::SPI_prepare_cursor(
            text.as_ptr(),
            statement.parameters.len() as i32,
            statement.parameters.as_ptr().cast_mut(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        )
    };
    if plan.is_null() {
        return Err(Error::Internal(format!(
            "could not prepare statement {}",
            statement.name
        )));
    }
    // SAFETY: a plan just returned by SPI_prepare.
    unsafe { pg_sys::SPI_keepplan(plan) };
    PLANS.with(|plans| plans.borrow_mut().insert(statement.name, plan));
    Ok(plan)
}

/// One row of a result, valid while the connection is open.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    descriptor: pg_sys::TupleDesc,
}

impl Row {
    /// Column `column` (1-based) as `T`; None when NULL.
    pub fn get<T: FromDatum>(&self, column: usize) -> Option<T> {
        let mut is_null = false;
        // SAFETY: the tuple and descriptor come from SPI_tuptable of the open connection, and
        // every statement's column types are fixed, so T matches by construction.
        unsafe {
            let datum =
                pg_sys::SPI_getbinval(self.tuple, self.descriptor, column as i32, &mut is_null);
            T::from_datum(datum, is_null)
        }
    }
}

/// Runs `f` inside an SPI connection; every [`execute`] call must be inside one.
pub fn connected<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    pgrx::Spi::connect(|_| f())
}

/// Executes `statement` with `arguments` (None for NULL) reading with `snapshot`, returning the
/// number of rows processed and mapping each returned row with `each`.
pub fn execute<R>(
    statement: &'static Statement,
    arguments: &[Option<Datum>],
    snapshot: Snapshot,
    mut each: impl FnMut(&Row) -> R,
) -> Result<(u64, Vec<R>)> {
    assert_eq!(
        arguments.len(),
        statement.parameters.len(),
        "{}",
        statement.name
    );
    let plan = plan(statement)?;
    let mut values: Vec<Datum> = arguments
        .iter()
        .map(|argument| argument.unwrap_or(Datum::from(0usize)))
        .collect();
    let nulls: Vec<std::ffi::c_char> = arguments
        .iter()
        .map(|argument| if argument.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    // SAFETY: a kept plan, arrays of its parameter count, inside an SPI connection.
    let status = unsafe {
        match snapshot {
            Snapshot::Caller => {
                pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), true, 0)
            }
            Snapshot::Current => {
                pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0)
            }
            Snapshot::Latest => pg_sys::SPI_execute_snapshot(
                plan,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                false,
                true,
                0,
            ),
        }
    };
    if status < 0 {
        return Err(Error::Internal(format!(
            "statement {} failed with SPI status {status}",
            statement.name
        )));
    }
    // SAFETY: SPI_processed and SPI_tuptable describe the statement just executed.
    unsafe {
        let processed = pg_sys::SPI_processed;
        let table = pg_sys::SPI_tuptable;
        let mut rows = Vec::new();
        if !table.is_null() {
            let descriptor = (*table).tupdesc;
            for index in 0..processed as usize {
                let row = Row {
                    tuple: *(*table).vals.add(index),
                    descriptor,
                };
                rows.push(each(&row));
            }
        }
        Ok((processed, rows))
    }
}

/// The first row mapped with `each`, if any.
pub fn first<R>(
    statement: &'static Statement,
    arguments: &[Option<Datum>],
    snapshot: Snapshot,
    each: impl FnMut(&Row) -> R,
) -> Result<Option<R>> {
    Ok(execute(statement, arguments, snapshot, each)?
        .1
        .into_iter()
        .next())
}
