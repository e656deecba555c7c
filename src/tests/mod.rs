//! `#[pg_test]` unit tests: each runs inside one backend, in a transaction that is rolled back,
//! so they show what one call does. Concurrency is shown in `tests/` at the top level.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const AGGREGATE: &str = "'7f3c2a1e-0000-4000-8000-000000000001'";

    fn sql_i64(query: &str) -> Option<i64> {
        Spi::get_one::<i64>(query).unwrap()
    }

    fn sql_bool(query: &str) -> Option<bool> {
        Spi::get_one::<bool>(query).unwrap()
    }

    fn record(application: &str, version: i64) -> i64 {
        sql_i64(&format!(
            "SELECT biomero.record_event('{application}', {AGGREGATE}, {version}, 't', '\\x00')"
        ))
        .unwrap()
    }

    #[pg_test]
    fn test_extension_ready() {
        assert_eq!(
            sql_i64("SELECT count(*) FROM pg_tables WHERE schemaname = 'biomero'"),
            Some(3)
        );
    }

    #[pg_test]
    fn test_record_event_assigns_consecutive_ids_per_application() {
        assert_eq!(record("A", 0), 1);
        assert_eq!(record("A", 1), 2);
        assert_eq!(record("B", 0), 1);
        assert_eq!(record("A", 2), 3);
        assert_eq!(sql_i64("SELECT biomero.max_notification_id('A')"), Some(3));
        assert_eq!(sql_i64("SELECT biomero.max_notification_id('B')"), Some(1));
        assert_eq!(sql_i64("SELECT biomero.max_notification_id('C')"), None);
    }

    #[pg_test]
    fn test_record_event_stores_what_it_was_given() {
        record("A", 4);
        let row = Spi::get_three::<String, Vec<u8>, i64>(
            "SELECT topic, state, originator_version FROM biomero.events WHERE application_name = 'A'",
        )
        .unwrap();
        assert_eq!(row, (Some("t".to_string()), Some(vec![0u8]), Some(4)));
    }

    #[pg_test(
        error = "application \"A\" already has version 0 of aggregate 7f3c2a1e-0000-4000-8000-000000000001"
    )]
    fn test_record_event_duplicate_version_is_a_conflict() {
        record("A", 0);
        record("A", 0);
    }

    #[pg_test(error = "application_name must not be NULL")]
    fn test_record_event_null_application() {
        Spi::run(&format!(
            "SELECT biomero.record_event(NULL, {AGGREGATE}, 0, 't', '')"
        ))
        .unwrap();
    }

    #[pg_test(error = "application_name must not be empty")]
    fn test_record_event_empty_application() {
        Spi::run(&format!(
            "SELECT biomero.record_event('', {AGGREGATE}, 0, 't', '')"
        ))
        .unwrap();
    }

    #[pg_test(error = "application_name is 256 characters long; the limit is 255")]
    fn test_record_event_long_application() {
        Spi::run(&format!(
            "SELECT biomero.record_event(repeat('x', 256), {AGGREGATE}, 0, 't', '')"
        ))
        .unwrap();
    }

    #[pg_test(error = "originator_id must not be NULL")]
    fn test_record_event_null_originator() {
        Spi::run("SELECT biomero.record_event('A', NULL, 0, 't', '')").unwrap();
    }

    #[pg_test(error = "originator_version must be >= 0, got -1")]
    fn test_record_event_negative_version() {
        Spi::run(&format!(
            "SELECT biomero.record_event('A', {AGGREGATE}, -1, 't', '')"
        ))
        .unwrap();
    }

    #[pg_test(error = "topic must not be empty")]
    fn test_record_event_empty_topic() {
        Spi::run(&format!(
            "SELECT biomero.record_event('A', {AGGREGATE}, 0, '', '')"
        ))
        .unwrap();
    }

    #[pg_test(error = "state must not be NULL")]
    fn test_record_event_null_state() {
        Spi::run(&format!(
            "SELECT biomero.record_event('A', {AGGREGATE}, 0, 't', NULL)"
        ))
        .unwrap();
    }

    fn batch(application: &str, versions: &str, tracking: &str) -> Option<Vec<i64>> {
        let count: usize = versions.split(',').count();
        let ids = vec![AGGREGATE; count].join(",");
        let topics = vec!["'t'"; count].join(",");
        let states = vec!["'\\x01'::bytea"; count].join(",");
        Spi::get_one::<Vec<i64>>(&format!(
            "SELECT biomero.record_events('{application}', ARRAY[{ids}]::uuid[], \
             ARRAY[{versions}]::bigint[], ARRAY[{topics}]::text[], ARRAY[{states}]::bytea[]{tracking})"
        ))
        .unwrap()
    }

    #[pg_test]
    fn test_record_events_returns_ids_in_order() {
        record("A", 0);
        assert_eq!(batch("A", "1,2,3", ""), Some(vec![2, 3, 4]));
        assert_eq!(sql_i64("SELECT biomero.max_notification_id('A')"), Some(4));
    }

    #[pg_test]
    fn test_record_events_with_tracking_records_once() {
        assert_eq!(batch("F", "0,1", ", 'U', 5"), Some(vec![1, 2]));
        assert_eq!(sql_i64("SELECT biomero.max_tracking_id('F', 'U')"), Some(5));
        // The same position again writes nothing and says so with NULL.
        assert_eq!(batch("F", "2", ", 'U', 5"), None);
        assert_eq!(batch("F", "2", ", 'U', 4"), None);
        assert_eq!(
            sql_i64("SELECT count(*) FROM biomero.events WHERE application_name = 'F'"),
            Some(2)
        );
        assert_eq!(batch("F", "2", ", 'U', 6"), Some(vec![3]));
    }

    #[pg_test]
    fn test_record_events_empty_batch_with_tracking() {
        let empty = Spi::get_one::<Vec<i64>>(
            "SELECT biomero.record_events('F', '{}', '{}', '{}', '{}', 'U', 1)",
        )
        .unwrap();
        assert_eq!(empty, Some(vec![]));
        assert_eq!(sql_i64("SELECT biomero.max_tracking_id('F', 'U')"), Some(1));
        assert_eq!(sql_i64("SELECT biomero.max_notification_id('F')"), None);
    }

    #[pg_test(
        error = "application \"A\" already has version 1 of aggregate 7f3c2a1e-0000-4000-8000-000000000001"
    )]
    fn test_record_events_duplicate_inside_batch() {
        batch("A", "0,1,1", "");
    }

    #[pg_test(
        error = "originator_ids, originator_versions, topics and states must have the same length, got 2, 1, 2 and 2"
    )]
    fn test_record_events_mismatched_arrays() {
        Spi::run(&format!(
            "SELECT biomero.record_events('A', ARRAY[{AGGREGATE}, {AGGREGATE}]::uuid[], ARRAY[0], \
             ARRAY['t','t'], ARRAY['\\x00'::bytea, '\\x00'::bytea])"
        ))
        .unwrap();
    }

    #[pg_test(error = "originator_versions[2] must not be NULL")]
    fn test_record_events_null_element() {
        Spi::run(&format!(
            "SELECT biomero.record_events('A', ARRAY[{AGGREGATE}, {AGGREGATE}]::uuid[], ARRAY[0, NULL]::bigint[], \
             ARRAY['t','t'], ARRAY['\\x00'::bytea, '\\x00'::bytea])"
        ))
        .unwrap();
    }

    #[pg_test(error = "upstream_notification_id must not be NULL")]
    fn test_record_events_half_tracking() {
        batch("F", "0", ", 'U', NULL");
    }

    #[pg_test(error = "upstream_notification_id must be >= 1, got 0")]
    fn test_record_events_tracking_zero() {
        batch("F", "0", ", 'U', 0");
    }

    #[pg_test]
    fn test_record_tracking_advances_only_forward() {
        assert_eq!(
            sql_bool("SELECT biomero.record_tracking('F', 'U', 3)"),
            Some(true)
        );
        assert_eq!(
            sql_bool("SELECT biomero.record_tracking('F', 'U', 3)"),
            Some(false)
        );
        assert_eq!(
            sql_bool("SELECT biomero.record_tracking('F', 'U', 2)"),
            Some(false)
        );
        assert_eq!(
            sql_bool("SELECT biomero.record_tracking('F', 'U', 7)"),
            Some(true)
        );
        assert_eq!(
            sql_bool("SELECT biomero.record_tracking('F', 'V', 1)"),
            Some(true)
        );
        assert_eq!(sql_i64("SELECT biomero.max_tracking_id('F', 'U')"), Some(7));
        assert_eq!(sql_i64("SELECT biomero.max_tracking_id('F', 'V')"), Some(1));
        assert_eq!(sql_i64("SELECT biomero.max_tracking_id('G', 'U')"), None);
    }

    #[pg_test(error = "notification_id must be >= 1, got -4")]
    fn test_record_tracking_negative_id() {
        Spi::run("SELECT biomero.record_tracking('F', 'U', -4)").unwrap();
    }

    #[pg_test(error = "upstream_application_name must not be empty")]
    fn test_record_tracking_empty_upstream() {
        Spi::run("SELECT biomero.record_tracking('F', '', 1)").unwrap();
    }

    #[pg_test]
    fn test_claim_returns_position() {
        assert_eq!(sql_i64("SELECT biomero.claim('F', 'U')"), Some(0));
        Spi::run("SELECT biomero.record_tracking('F', 'U', 9)").unwrap();
        assert_eq!(sql_i64("SELECT biomero.claim('F', 'U')"), Some(9));
        // Re-entrant within the holder's transaction, also without waiting.
        assert_eq!(
            sql_i64("SELECT biomero.claim('F', 'U', wait => false)"),
            Some(9)
        );
        let held = sql_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = {} \
             AND pid = pg_backend_pid()",
            crate::locks::CLAIM_LOCK_KIND
        ));
        assert_eq!(held, Some(1));
    }

    #[pg_test(error = "wait must not be NULL")]
    fn test_claim_null_wait() {
        Spi::run("SELECT biomero.claim('F', 'U', NULL)").unwrap();
    }

    fn notification_ids(query: &str) -> Vec<i64> {
        Spi::connect(|client| {
            client
                .select(query, None, &[])
                .unwrap()
                .map(|row| row.get::<i64>(1).unwrap().unwrap())
                .collect()
        })
    }

    #[pg_test]
    fn test_select_notifications_bounds_and_topics() {
        for version in 0..5 {
            record("A", version);
        }
        Spi::run("UPDATE biomero.events SET topic = 'u' WHERE notification_id IN (2, 4)").unwrap();
        let ids = |args: &str| {
            notification_ids(&format!(
                "SELECT notification_id FROM biomero.select_notifications('A', {args})"
            ))
        };
        assert_eq!(ids("NULL, 10"), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids("2, 2"), vec![2, 3]);
        assert_eq!(ids("2, 10, inclusive_of_start => false"), vec![3, 4, 5]);
        assert_eq!(ids("1, 10, stop => 3"), vec![1, 2, 3]);
        assert_eq!(ids("1, 10, topics => '{u}'"), vec![2, 4]);
        assert_eq!(ids("1, 0"), Vec::<i64>::new());
    }

    #[pg_test(error = "\"limit\" must be >= 0, got -1")]
    fn test_select_notifications_negative_limit() {
        Spi::run("SELECT * FROM biomero.select_notifications('A', 1, -1)").unwrap();
    }

    #[pg_test(error = "\"limit\" must not be NULL")]
    fn test_select_notifications_null_limit() {
        Spi::run("SELECT * FROM biomero.select_notifications('A', 1, NULL)").unwrap();
    }

    #[pg_test(error = "topics[2] must not be NULL")]
    fn test_select_notifications_null_topic() {
        Spi::run(
            "SELECT * FROM biomero.select_notifications('A', 1, 5, topics => ARRAY['t', NULL])",
        )
        .unwrap();
    }

    #[pg_test(error = "topics[1] must not be empty")]
    fn test_select_notifications_empty_topic() {
        Spi::run("SELECT * FROM biomero.select_notifications('A', 1, 5, topics => ARRAY[''])")
            .unwrap();
    }

    #[pg_test]
    fn test_select_events_versions() {
        for version in 0..5 {
            record("A", version);
        }
        let versions = |args: &str| {
            notification_ids(&format!(
                "SELECT originator_version FROM biomero.select_events('A', {AGGREGATE}{args})"
            ))
        };
        assert_eq!(versions(""), vec![0, 1, 2, 3, 4]);
        assert_eq!(versions(", gt => 1, lte => 3"), vec![2, 3]);
        assert_eq!(versions(", \"desc\" => true, \"limit\" => 2"), vec![4, 3]);
        assert_eq!(versions(", lte => 2, \"desc\" => true"), vec![2, 1, 0]);
    }

    #[pg_test(error = "\"limit\" must be >= 0, got -5")]
    fn test_select_events_negative_limit() {
        Spi::run(&format!(
            "SELECT * FROM biomero.select_events('A', {AGGREGATE}, \"limit\" => -5)"
        ))
        .unwrap();
    }

    #[pg_test]
    fn test_views_and_summary() {
        for version in 0..3 {
            record("U", version);
        }
        Spi::run("SELECT biomero.record_tracking('F', 'U', 1)").unwrap();
        assert_eq!(
            sql_i64("SELECT lag FROM biomero.followers WHERE application_name = 'F'"),
            Some(2)
        );
        assert_eq!(
            sql_i64("SELECT event_count FROM biomero.applications WHERE application_name = 'U'"),
            Some(3)
        );
        let summary = Spi::get_one::<pgrx::JsonB>("SELECT biomero.summary()")
            .unwrap()
            .unwrap();
        let upstream = summary.0["applications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|application| application["application_name"] == "U")
            .unwrap()
            .clone();
        assert_eq!(upstream["head_notification_id"], 3);
        assert_eq!(summary.0["followers"][0]["lag"], 2);
        assert_eq!(summary.0["followers"][0]["position"], 1);
    }

    #[pg_test]
    fn test_functions_pin_search_path() {
        let unpinned = sql_i64(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'biomero' AND NOT coalesce(p.proconfig, '{}') @> \
             ARRAY['search_path=pg_catalog, pg_temp']",
        );
        assert_eq!(unpinned, Some(0));
    }
}
