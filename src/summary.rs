//! biomero.summary(): the operator views as one jsonb document.

use crate::error::Result;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde::Serialize;

#[derive(Serialize)]
struct Application {
    application_name: String,
    head_notification_id: i64,
    event_count: i64,
}

#[derive(Serialize)]
struct Follower {
    application_name: String,
    upstream_application_name: String,
    position: i64,
    upstream_head: Option<i64>,
    lag: Option<i64>,
}

#[derive(Serialize)]
struct Summary {
    applications: Vec<Application>,
    followers: Vec<Follower>,
}

/// `{"applications": [...], "followers": [...]}` from `biomero.applications` and
/// `biomero.followers`.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn summary() -> JsonB {
    let run = || -> Result<JsonB> {
        let summary = Spi::connect(|client| {
            let mut applications = Vec::new();
            for row in client.select(
                "SELECT application_name, head_notification_id, event_count \
                 FROM biomero.applications ORDER BY application_name",
                None,
                &[],
            )? {
                applications.push(Application {
                    application_name: row.get(1)?.unwrap_or_default(),
                    head_notification_id: row.get(2)?.unwrap_or_default(),
                    event_count: row.get(3)?.unwrap_or_default(),
                });
            }
            let mut followers = Vec::new();
            for row in client.select(
                "SELECT application_name, upstream_application_name, position, upstream_head, lag \
                 FROM biomero.followers ORDER BY application_name, upstream_application_name",
                None,
                &[],
            )? {
                followers.push(Follower {
                    application_name: row.get(1)?.unwrap_or_default(),
                    upstream_application_name: row.get(2)?.unwrap_or_default(),
                    position: row.get(3)?.unwrap_or_default(),
                    upstream_head: row.get(4)?,
                    lag: row.get(5)?,
                });
            }
            Ok::<_, pgrx::spi::Error>(Summary {
                applications,
                followers,
            })
        })?;
        Ok(JsonB(
            serde_json::to_value(summary).expect("plain data serializes"),
        ))
    };
    run().unwrap_or_else(|error| error.raise())
}
