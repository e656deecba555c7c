//! The one `#[pg_test]`: the integration tests in `tests/` start their server through it
//! (`pgrx_tests::run_test("test_extension_ready", …)`). Single-session behaviour is specified
//! by the regression tests in `tests/pg_regress`, whose expected output reads as examples.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn test_extension_ready() {
        let tables =
            Spi::get_one::<i64>("SELECT count(*) FROM pg_tables WHERE schemaname = 'biomero'")
                .unwrap();
        assert_eq!(tables, Some(3));
    }
}
