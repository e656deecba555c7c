//! Argument validation: every check runs before anything is locked or written. The SQL-language
//! functions call the same checks through `biomero.check_name` and `biomero.check_limit`, so
//! each rule and its message is written once.

use crate::error::{Error, Result};
use pgrx::prelude::*;

/// Longest application name accepted, in characters. eventsourcing names applications after
/// their Python class, so this is generous; the limit keeps NOTIFY payloads and index entries
/// small.
pub const MAX_NAME_LENGTH: usize = 255;

pub fn required<T>(value: Option<T>, what: &str) -> Result<T> {
    value.ok_or_else(|| Error::Null(what.to_string()))
}

/// A non-NULL, non-empty application name of at most [`MAX_NAME_LENGTH`] characters.
pub fn name<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str> {
    let value = required(value, what)?;
    let length = value.chars().count();
    if length == 0 {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if length > MAX_NAME_LENGTH {
        return Err(Error::InvalidArgument(format!(
            "{what} is {length} characters long; the limit is {MAX_NAME_LENGTH}"
        )));
    }
    Ok(value)
}

pub fn topic<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str> {
    let value = required(value, what)?;
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    Ok(value)
}

pub fn at_least(value: i64, minimum: i64, what: &str) -> Result<i64> {
    if value < minimum {
        return Err(Error::InvalidArgument(format!(
            "{what} must be >= {minimum}, got {value}"
        )));
    }
    Ok(value)
}

/// An optional LIMIT: NULL means no limit, a negative one is an error.
pub fn limit(value: Option<i64>) -> Result<Option<i64>> {
    value
        .map(|limit| at_least(limit, 0, "\"limit\""))
        .transpose()
}

/// The rules as SQL functions, for the SQL-language functions (in schema biomero_internal:
/// helpers, not the API).
#[pg_schema]
mod biomero_internal {
    use super::{limit, name, required, topic};
    use pgrx::pg_sys::panic::ErrorReport;
    use pgrx::prelude::*;

    /// The name rule for SQL-language functions: raises what [`name`] raises.
    #[pg_extern(immutable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn check_name(value: Option<&str>, argument: Option<&str>) -> Result<(), ErrorReport> {
        name(value, argument.unwrap_or("name"))?;
        Ok(())
    }

    /// The limit rule for SQL-language functions: raises what [`limit`] raises.
    #[pg_extern(immutable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn check_limit(value: Option<i64>) -> Result<(), ErrorReport> {
        limit(value)?;
        Ok(())
    }

    /// The topics filter rule for SQL-language functions: an array of non-empty topics.
    #[pg_extern(immutable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn check_topics(topics: Option<Array<&str>>) -> Result<(), ErrorReport> {
        let topics = required(topics, "topics")?;
        for (index, wanted) in topics.iter().enumerate() {
            topic(wanted, &format!("topics[{}]", index + 1))?;
        }
        Ok(())
    }
}
