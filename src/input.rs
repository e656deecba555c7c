//! Argument validation: every check runs before anything is locked or written.

use crate::error::{Error, Result};

/// Longest application name accepted, in characters. eventsourcing names applications after
/// their Python class, so this is generous; the limit keeps lock keys, NOTIFY payloads and
/// index entries small.
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
