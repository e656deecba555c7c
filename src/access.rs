//! Who may write, and with whose rights the writes run.
//!
//! The write functions are not SECURITY DEFINER: they note the calling role (`current_user` at
//! the call, so a role's own SECURITY DEFINER wrapper counts as that role), check it against the
//! application's restriction, and only then switch to the owner of schema `biomero` for the
//! statements on the extension's tables. Callers therefore need EXECUTE on the function and no
//! privilege on the tables, and ids can only be assigned by the functions. The switch is undone
//! when the returned guard is dropped; on an error, transaction or subtransaction abort restores
//! the user as it does for SECURITY DEFINER functions.

use crate::catalog;
use crate::error::{Error, Result};
use crate::registry::Application;
use pgrx::pg_sys::{self, Oid};

/// The role that called the function.
#[derive(Clone, Copy)]
pub struct Caller(Oid);

pub fn caller() -> Caller {
    // SAFETY: reads the backend's current user id.
    Caller(unsafe { pg_sys::GetUserId() })
}

/// What a restricted application's non-members may not do, as the error message words it.
#[derive(Clone, Copy)]
pub enum Action {
    Append,
    RecordPosition,
    Claim,
}

impl Action {
    fn words(self) -> &'static str {
        match self {
            Action::Append => "append to",
            Action::RecordPosition => "record positions of",
            Action::Claim => "claim as",
        }
    }
}

impl Caller {
    /// Fails when `application` is restricted to a role the caller is not a member of.
    pub fn authorize(self, application: &Application, action: Action) -> Result<()> {
        let Some(role) = application.restricted_to else {
            return Ok(());
        };
        // SAFETY: plain catalog lookups; a dropped role is a member of nothing.
        if unsafe { pg_sys::is_member_of_role(self.0, role) } {
            return Ok(());
        }
        Err(Error::Restricted {
            action: action.words(),
            application: application.name.clone(),
            role: role_name(role),
        })
    }
}

fn role_name(role: Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr returns NULL for a dropped role.
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        if name.is_null() {
            format!("{}", role.to_u32())
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// While alive, statements run as the owner of schema `biomero`.
pub struct AsOwner {
    user: Oid,
    context: i32,
}

/// Switches to the schema owner for the statements of `function`, which needs the current
/// release's tables: a database whose extension was not updated yet says so.
pub fn as_owner(function: &'static str) -> Result<AsOwner> {
    // SAFETY: reads shared state. Refused before anything touches shared memory: a standby's
    // shared memory must not hold append state a promotion would keep.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(Error::ReadOnly(function));
    }
    let owner = catalog::schema_owner()?;
    if catalog::registry().is_err() {
        return Err(Error::UpdateRequired(function));
    }
    let (mut user, mut context) = (Oid::INVALID, 0);
    // SAFETY: saves and switches the current user as fmgr does for SECURITY DEFINER;
    // SECURITY_LOCAL_USERID_CHANGE forbids SET ROLE while switched.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    Ok(AsOwner { user, context })
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores what as_owner saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}
