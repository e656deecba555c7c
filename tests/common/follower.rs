//! The follower step of the README's recipe, for the test binaries that run followers (they
//! include this file as a module of their own): in one transaction, claim the pair, read the
//! next notifications after the claimed position, process them and record the new position.

use crate::common::PAGE;
use postgres::{Client, IsolationLevel};

/// How one follower step runs.
#[derive(Clone, Copy, Debug)]
pub struct FollowerStep<'a> {
    pub follower: &'a str,
    pub upstream: &'a str,
    /// The most notifications one step processes.
    pub max: i64,
    /// Wait for a claim another transaction holds (`wait => true`), or skip the step.
    pub wait: bool,
    pub isolation: IsolationLevel,
    /// A table (follower, upstream, notification_id, process) that gets a row per processed
    /// notification from process `.1`, in the step's transaction: the read model whose rows
    /// show how often each notification was processed.
    pub read_model: Option<(&'a str, i32)>,
    /// Record the position with the follower's own events, one of this topic per notification
    /// (its state the notification's id as text), by record_events; without, the position
    /// alone by record_tracking.
    pub emit: Option<&'a str>,
}

impl FollowerStep<'_> {
    /// Runs one step on `client`: the ids of the notifications it processed (none when there
    /// was nothing new), or None when it did not wait for a claim held elsewhere. A claimed
    /// position that does not advance fails the test.
    pub fn run(&self, client: &mut Client) -> Result<Option<Vec<i64>>, postgres::Error> {
        let (follower, upstream) = (self.follower, self.upstream);
        let mut tx = client
            .build_transaction()
            .isolation_level(self.isolation)
            .start()?;
        let position: Option<i64> = tx
            .query_one(
                "SELECT biomero.claim($1, $2, wait => $3)",
                &[&follower, &upstream, &self.wait],
            )?
            .get(0);
        let Some(position) = position else {
            tx.rollback()?;
            return Ok(None);
        };
        let ids: Vec<i64> = tx
            .query(PAGE, &[&upstream, &position, &self.max])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let Some(last) = ids.last() else {
            tx.commit()?;
            return Ok(Some(ids));
        };
        if let Some((table, process)) = self.read_model {
            tx.execute(
                &format!("INSERT INTO {table} SELECT $1, $2, unnest($3::int8[]), $4"),
                &[&follower, &upstream, &ids, &process],
            )?;
        }
        let advanced = match self.emit {
            Some(topic) => tx
                .query_one(
                    "SELECT biomero.record_events($1, array_agg(gen_random_uuid()), \
                     array_agg(0::int8), array_agg($5::text), \
                     array_agg(convert_to(id::text, 'UTF8')), $2, $3) \
                     FROM unnest($4::int8[]) AS id",
                    &[&follower, &upstream, last, &ids, &topic],
                )?
                .get::<_, Option<Vec<i64>>>(0)
                .is_some(),
            None => tx
                .query_one(
                    "SELECT biomero.record_tracking($1, $2, $3)",
                    &[&follower, &upstream, last],
                )?
                .get(0),
        };
        assert!(advanced, "a claimed position must advance");
        tx.commit()?;
        Ok(Some(ids))
    }
}
