//! The extension's objects in the catalog, found by name in schema `biomero`: its tables and
//! the index the registry is read by, the schema's owner, and what the calling role may read.

use crate::error::{Error, Result};
use pgrx::pg_sys::{self, Oid};
use pgrx::IntoDatum;

/// The owner of schema `biomero`, as whom the write functions run their statements.
pub fn schema_owner() -> Result<Oid> {
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

/// The application registry table; missing in a database not updated to 0.3.0 yet.
pub fn registry() -> Result<Oid> {
    relation(c"application_registry")
}

/// The registry's primary key index (on application_id).
pub fn registry_key() -> Result<Oid> {
    relation(c"application_registry_pkey")
}

/// The extension's events table, which identifies this installation of the extension in this
/// database: shared memory is keyed by it, so that dropping and creating the extension again
/// starts afresh.
pub fn events() -> Result<Oid> {
    relation(c"events")
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
