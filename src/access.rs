//! Who may write, and with whose rights the writes run.
//!
//! The write functions are not SECURITY DEFINER: they note the calling role (`current_user` at
//! the call, so a role's own SECURITY DEFINER wrapper counts as that role), check it against the
//! application's restriction, and only then switch to the owner of schema `biomero` for the
//! statements on the extension's tables. Callers therefore need EXECUTE on the function and no
//! privilege on the tables, and ids can only be assigned by the functions. The switch is undone
//! when the returned guard is dropped; on an error, transaction or subtransaction abort restores
//! the user as it does for SECURITY DEFINER functions.

use crate::error::{Error, Result};
use crate::registry::Application;
use pgrx::pg_sys::{self, Oid};
use pgrx::IntoDatum;

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
    pub fn authorize(self, application: &Application, name: &str, action: Action) -> Result<()> {
        let Some(role) = application.restricted_to else {
            return Ok(());
        };
        // SAFETY: plain catalog lookups; a dropped role is a member of nothing.
        if unsafe { pg_sys::is_member_of_role(self.0, role) } {
            return Ok(());
        }
        Err(Error::Restricted {
            action: action.words(),
            application: name.to_string(),
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
    let owner = schema_owner()?;
    if !registry_exists() {
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

fn schema_owner() -> Result<Oid> {
    // SAFETY: syscache lookups of schema biomero; the tuple is released before returning.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"biomero".as_ptr(), true);
        if namespace == Oid::INVALID {
            return Err(Error::NotInPrerequisiteState(
                "schema biomero does not exist".into(),
            ));
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            namespace.into_datum().expect("an oid is a datum"),
        );
        if tuple.is_null() {
            return Err(Error::Internal("schema biomero vanished".into()));
        }
        let owner =
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_namespace>(tuple)).nspowner;
        pg_sys::ReleaseSysCache(tuple);
        Ok(owner)
    }
}

fn registry_exists() -> bool {
    registry_relation().is_ok()
}

/// The application registry table.
pub fn registry_relation() -> Result<Oid> {
    relation(c"application_registry")
}

/// The registry's primary key index (on application_id).
pub fn registry_key_index() -> Result<Oid> {
    relation(c"application_registry_pkey")
}

/// Whether the calling role may SELECT from relation `name` of schema biomero.
pub fn may_select(name: &std::ffi::CStr) -> bool {
    let Ok(relation) = relation(name) else {
        return false;
    };
    // SAFETY: an ACL lookup for the current user.
    unsafe {
        pg_sys::pg_class_aclcheck(relation, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

fn relation(name: &std::ffi::CStr) -> Result<Oid> {
    // SAFETY: syscache lookups.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"biomero".as_ptr(), true);
        let relation = if namespace == Oid::INVALID {
            Oid::INVALID
        } else {
            pg_sys::get_relname_relid(name.as_ptr(), namespace)
        };
        if relation == Oid::INVALID {
            return Err(Error::NotInPrerequisiteState(format!(
                "table biomero.{} does not exist",
                name.to_string_lossy()
            )));
        }
        Ok(relation)
    }
}

/// The extension's events table, which identifies this installation of the extension in this
/// database: shared memory is keyed by it, so that dropping and creating the extension again
/// starts afresh.
pub fn events_relation() -> Result<Oid> {
    relation(c"events")
}
