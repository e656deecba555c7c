//! Hostile input: random and hostile arguments to every function of the extension, checked
//! against a model of what the README documents.
//!
//! Each call either does exactly what the model says (the ids it returns, the rows it reads,
//! the position it records) or raises one of the errors documented for its arguments: 22004
//! for a NULL, 22023 for a value out of its domain, 23505 only for a genuine second event of
//! an aggregate version, 55P03 only while another session holds the lock waited for
//! (`lock_timeout` is set). After all calls the stored tables must equal the model, ids are
//! contiguous from 1 per application, versions unique, positions positive, tables present.
//!
//! The seed is printed; `BIOMERO_FUZZ_SEED=<n>` replays a run, `BIOMERO_FUZZ_CALLS=<n>`
//! changes its length.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

const DEFAULT_SEED: u64 = 0x5eed_b10e_2026;
const DEFAULT_CALLS: usize = 5000;
const MAX_NAME: usize = 255;

/// Strings that have broken SQL built by pasting, JSON, format strings, terminals or
/// length checks elsewhere.
const HOSTILE: &[&str] = &[
    "'); DROP TABLE biomero.events; --",
    "Robert'); DROP TABLE biomero.tracking;--",
    "\"; DELETE FROM biomero.tracking; --",
    "' OR '1'='1",
    "$1",
    "$$; SELECT pg_sleep(10); $$",
    "%s%n%x%d",
    "{\"application_name\": \"x\", \"first\": 1}",
    "\\x00\\",
    "\\",
    "biomero.events",
    "NULL",
    "null",
    " ",
    "\n\r\t",
    "\u{1}\u{1f}\u{7f}",
    "\u{202e}gnp.exe",
    "\u{200b}",
    "e\u{301}",
    "🧪🔬🧬",
    "名前",
    "WorkflowTracker",
    "biomero.eventsourcing:WorkflowRun.WorkflowInitiated",
];

const UUID_POOL: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "7f3c2a1e-0000-4000-8000-000000000001",
    "7f3c2a1e-0000-4000-8000-000000000002",
];

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Clone, Debug, PartialEq)]
struct Event {
    originator_id: String,
    version: i64,
    topic: String,
    state_len: usize,
    state_hash: u64,
}

/// What the README says the store holds after the calls that succeeded.
#[derive(Default)]
struct Model {
    events: HashMap<String, Vec<Event>>,
    versions: HashSet<(String, String, i64)>,
    positions: HashMap<(String, String), i64>,
}

impl Model {
    fn head(&self, application: &str) -> i64 {
        self.events
            .get(application)
            .map_or(0, |log| log.len() as i64)
    }
}

/// What the second session holds in its open transaction.
#[derive(Clone, Debug, PartialEq)]
enum Held {
    Nothing,
    /// The claim of (follower, upstream).
    Claim {
        follower: String,
        upstream: String,
    },
    /// The append lock of an application.
    Append(String),
}

type Row = (i64, String, i64, String, usize, u64);

struct Fuzz {
    rng: StdRng,
    client: Client,
    holder: Client,
    held: Held,
    model: Model,
    names: Vec<String>,
    huge_states: usize,
    /// Generate only short topics and states (for long batches).
    small: bool,
    calls: BTreeMap<&'static str, usize>,
    time: BTreeMap<&'static str, std::time::Duration>,
    outcomes: BTreeMap<String, usize>,
    failures: BTreeMap<String, (usize, String)>,
}

type Expected = Vec<SqlState>;

impl Fuzz {
    // ---- argument generators ---------------------------------------------------------

    fn random_string(&mut self, max_chars: usize) -> String {
        let length = self.rng.gen_range(1..=max_chars);
        (0..length)
            .map(|_| match self.rng.gen_range(0..6) {
                0 => char::from(self.rng.gen_range(b'a'..=b'z')),
                1 => *['\'', '"', ';', '-', '\\', '$', '%', '{', '}', ' ', '\n']
                    .choose(&mut self.rng)
                    .unwrap(),
                2 => char::from_u32(self.rng.gen_range(0x80..0x800)).unwrap_or('é'),
                3 => char::from_u32(self.rng.gen_range(0x1F300..0x1F6FF)).unwrap_or('🧪'),
                4 => char::from_u32(self.rng.gen_range(1..0x20)).unwrap(),
                _ => char::from_u32(self.rng.gen_range(0x4E00..0x9FFF)).unwrap_or('名'),
            })
            .collect()
    }

    fn long_string(&mut self, chars: usize) -> String {
        let unit = ["x", "é", "😀", "'", "\u{1}"]
            .choose(&mut self.rng)
            .unwrap();
        unit.repeat(chars)
    }

    /// An application name: mostly names already in use (so calls meet each other's data),
    /// then NULL, empty, too long, exactly the limit, hostile and random ones.
    fn name(&mut self) -> Option<String> {
        match self.rng.gen_range(0..100) {
            0..=44 => Some(self.names.choose(&mut self.rng).unwrap().clone()),
            45..=51 => None,
            52..=58 => Some(String::new()),
            59..=62 => Some(self.long_string(MAX_NAME + 1)),
            63..=64 => {
                let chars = [1_000, 100_000, 1_000_000][self.rng.gen_range(0..3)];
                Some(self.long_string(chars))
            }
            65..=69 => Some(self.long_string(MAX_NAME)),
            70..=84 => Some(HOSTILE.choose(&mut self.rng).unwrap().to_string()),
            _ => Some(self.random_string(40)),
        }
    }

    /// A new UUID from the seeded generator, so a seed replays the same calls.
    fn fresh_uuid(&mut self) -> String {
        uuid_text(self.rng.gen())
    }

    fn uuid(&mut self) -> Option<String> {
        match self.rng.gen_range(0..100) {
            0..=4 => None,
            5..=49 => Some(UUID_POOL.choose(&mut self.rng).unwrap().to_string()),
            _ => Some(self.fresh_uuid()),
        }
    }

    fn version(&mut self) -> Option<i64> {
        match self.rng.gen_range(0..100) {
            0..=4 => None,
            5..=9 => Some(-1),
            10..=12 => Some(i64::MIN),
            13..=15 => Some(self.rng.gen_range(i64::MIN..0)),
            16..=19 => Some(i64::MAX),
            20..=69 => Some(self.rng.gen_range(0..6)),
            _ => Some(self.rng.gen_range(0..i64::MAX)),
        }
    }

    fn topic(&mut self) -> Option<String> {
        let mut choice = self.rng.gen_range(0..100);
        if self.small && (10..=12).contains(&choice) {
            choice = 40;
        }
        match choice {
            0..=4 => None,
            5..=9 => Some(String::new()),
            10..=11 => Some(self.long_string(10_000)),
            12 => Some(self.long_string(1_000_000)),
            13..=39 => Some(HOSTILE.choose(&mut self.rng).unwrap().to_string()),
            40..=59 => {
                Some(["t", "biomero.test:A", "biomero.test:B"][self.rng.gen_range(0..3)].into())
            }
            _ => Some(self.random_string(60)),
        }
    }

    fn state(&mut self) -> Option<Vec<u8>> {
        if self.small {
            let length = self.rng.gen_range(0..50);
            return (!self.rng.gen_bool(0.02))
                .then(|| (0..length).map(|_| self.rng.gen()).collect());
        }
        match self.rng.gen_range(0..1000) {
            0..=49 => None,
            50..=149 => Some(Vec::new()),
            150..=199 => Some((0..65_536).map(|_| self.rng.gen()).collect()),
            // A few multi-MB states (capped so the run stays short).
            200..=202 if self.huge_states < 8 => {
                self.huge_states += 1;
                let size = self.rng.gen_range(2_000_000..4_000_000);
                Some((0..size).map(|i| (i % 251) as u8).collect())
            }
            _ => {
                let length = self.rng.gen_range(0..200);
                Some((0..length).map(|_| self.rng.gen()).collect())
            }
        }
    }

    /// A notification id or bound: extremes, non-positive and ordinary values.
    fn id(&mut self, around: i64) -> Option<i64> {
        match self.rng.gen_range(0..100) {
            0..=7 => None,
            8..=11 => Some(i64::MIN),
            12..=14 => Some(i64::MAX),
            15..=19 => Some(0),
            20..=24 => Some(-1),
            _ => Some(self.rng.gen_range(1..=around + 3)),
        }
    }

    fn limit(&mut self) -> Option<i64> {
        match self.rng.gen_range(0..100) {
            0..=9 => None,
            10..=17 => Some(-1),
            18..=20 => Some(i64::MIN),
            21..=25 => Some(i64::MAX),
            26..=30 => Some(0),
            _ => Some(self.rng.gen_range(1..20)),
        }
    }

    fn flag(&mut self) -> Option<bool> {
        match self.rng.gen_range(0..20) {
            0 => None,
            n => Some(n % 2 == 0),
        }
    }

    /// Lengths of the four arrays of record_events: usually equal, sometimes not.
    fn lengths(&mut self) -> [usize; 4] {
        let n = match self.rng.gen_range(0..100) {
            0..=9 => 0,
            10..=89 => self.rng.gen_range(1..5),
            _ => self.rng.gen_range(50..300),
        };
        let mut lengths = [n; 4];
        if self.rng.gen_bool(0.15) {
            let which = self.rng.gen_range(0..4);
            lengths[which] = if n == 0 || self.rng.gen_bool(0.5) {
                n + self.rng.gen_range(1..3)
            } else {
                n - 1
            };
        }
        lengths
    }

    fn maybe_null<T>(&mut self, value: T) -> Option<T> {
        (!self.rng.gen_bool(0.04)).then_some(value)
    }

    // ---- checking --------------------------------------------------------------------

    fn name_errors(value: &Option<String>, errors: &mut Expected) {
        match value {
            None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
            Some(name) if name.is_empty() || name.chars().count() > MAX_NAME => {
                errors.push(SqlState::INVALID_PARAMETER_VALUE)
            }
            Some(_) => {}
        }
    }

    fn fail(&mut self, kind: String, detail: String) {
        let entry = self.failures.entry(kind).or_insert((0, detail));
        entry.0 += 1;
    }

    /// Checks that `result` is an error with one of `expected`'s SQLSTATEs.
    fn expect_error<T>(
        &mut self,
        function: &'static str,
        result: Result<T, postgres::Error>,
        expected: &[SqlState],
        arguments: impl Fn() -> String,
    ) {
        match result {
            Ok(_) => {
                let mut documented: Vec<&str> = expected.iter().map(SqlState::code).collect();
                documented.sort();
                documented.dedup();
                self.fail(
                    format!(
                        "{function}: succeeded where the documented error is one of {}",
                        documented.join(", ")
                    ),
                    arguments(),
                )
            }
            Err(error) => match error.code() {
                Some(code) if expected.contains(code) => {
                    *self
                        .outcomes
                        .entry(format!("{function} {}", code.code()))
                        .or_default() += 1;
                }
                code => {
                    let mut documented: Vec<&str> = expected.iter().map(SqlState::code).collect();
                    documented.sort();
                    documented.dedup();
                    self.fail(
                        format!(
                            "{function}: raised {} {:?} where the documented error is one of {}",
                            code.map_or("(no SQLSTATE)", SqlState::code),
                            db_message(&error),
                            documented.join(", ")
                        ),
                        arguments(),
                    )
                }
            },
        }
    }

    /// The value of a call the model says succeeds, or None after recording the failure.
    fn expect_ok<T>(
        &mut self,
        function: &'static str,
        result: Result<T, postgres::Error>,
        arguments: impl Fn() -> String,
    ) -> Option<T> {
        match result {
            Ok(value) => {
                *self.outcomes.entry(format!("{function} ok")).or_default() += 1;
                Some(value)
            }
            Err(error) => {
                self.fail(
                    format!(
                        "{function}: documented to succeed, got {:?} {}",
                        error.code().map(SqlState::code),
                        db_message(&error)
                    ),
                    arguments(),
                );
                None
            }
        }
    }

    fn check_equal<T: PartialEq + std::fmt::Debug>(
        &mut self,
        function: &'static str,
        got: T,
        expected: T,
        arguments: impl Fn() -> String,
    ) {
        if got != expected {
            self.fail(
                format!("{function}: returned other than documented"),
                format!("got {got:?}, expected {expected:?}; {}", arguments()),
            );
        }
    }

    fn append_locked(&self, application: &str) -> bool {
        self.held == Held::Append(application.to_string())
    }

    fn claim_held(&self, follower: &str, upstream: &str) -> bool {
        matches!(&self.held, Held::Claim { follower: f, upstream: u } if f == follower && u == upstream)
    }

    /// Advances the model's position as record_tracking does (a held claim does not stop it:
    /// tracking takes no claim); None is never returned since claims lock no row.
    fn model_advance(&mut self, follower: &str, upstream: &str, id: i64) -> Option<bool> {
        let key = (follower.to_string(), upstream.to_string());
        let current = self.model.positions.get(&key).copied();
        Some(match current {
            Some(position) if position >= id => false,
            _ => {
                self.model.positions.insert(key, id);
                true
            }
        })
    }

    // ---- the calls ---------------------------------------------------------------------

    fn record_event(&mut self) {
        let (application, originator, version, topic, state) = (
            self.name(),
            self.uuid(),
            self.version(),
            self.topic(),
            self.state(),
        );
        let result = self.client.query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, $3, $4, $5)",
            &[&application, &originator, &version, &topic, &state],
        );
        let arguments = || {
            format!(
                "record_event({}, {originator:?}, {version:?}, {}, {} bytes)",
                short(&application),
                short(&topic),
                state.as_ref().map_or(0, Vec::len)
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&application, &mut errors);
        if originator.is_none() || version.is_none() || state.is_none() {
            errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
        }
        match &topic {
            None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
            Some(topic) if topic.is_empty() => errors.push(SqlState::INVALID_PARAMETER_VALUE),
            _ => {}
        }
        if version.is_some_and(|v| v < 0) {
            errors.push(SqlState::INVALID_PARAMETER_VALUE);
        }
        if !errors.is_empty() {
            return self.expect_error("record_event", result, &errors, arguments);
        }
        let (application, originator, version, topic, state) = (
            application.clone().unwrap(),
            originator.clone().unwrap(),
            version.unwrap(),
            topic.clone().unwrap(),
            state.clone().unwrap(),
        );
        if self.append_locked(&application) {
            return self.expect_error(
                "record_event",
                result,
                &[SqlState::LOCK_NOT_AVAILABLE],
                arguments,
            );
        }
        let key = (application.clone(), originator.clone(), version);
        if self.model.versions.contains(&key) {
            return self.expect_error(
                "record_event",
                result,
                &[SqlState::UNIQUE_VIOLATION],
                arguments,
            );
        }
        let Some(row) = self.expect_ok("record_event", result, arguments) else {
            return;
        };
        let id: i64 = row.get(0);
        let expected = self.model.head(&application) + 1;
        self.check_equal("record_event", id, expected, arguments);
        self.model.versions.insert(key);
        self.model
            .events
            .entry(application)
            .or_default()
            .push(Event {
                originator_id: originator,
                version,
                topic,
                state_len: state.len(),
                state_hash: fnv(&state),
            });
    }

    fn record_events(&mut self) {
        let application = self.name();
        let lengths = self.lengths();
        // Long batches get short topics and states, so the run stays short.
        self.small = lengths[0] > 10;
        let ids: Vec<Option<String>> = (0..lengths[0]).map(|_| self.uuid()).collect();
        let versions: Vec<Option<i64>> = (0..lengths[1]).map(|_| self.version()).collect();
        let topics: Vec<Option<String>> = (0..lengths[2]).map(|_| self.topic()).collect();
        let states: Vec<Option<Vec<u8>>> = (0..lengths[3]).map(|_| self.state()).collect();
        self.small = false;
        let (ids, versions) = (self.maybe_null(ids), self.maybe_null(versions));
        let (topics, states) = (self.maybe_null(topics), self.maybe_null(states));
        let (upstream, upstream_id) = match self.rng.gen_range(0..100) {
            0..=49 => (None, None),
            50..=89 => {
                let head = self.model.head(self.names[0].as_str());
                (self.name(), self.id(head))
            }
            90..=94 => (self.name(), None),
            _ => (None, self.id(10)),
        };
        let result = self.client.query_one(
            "SELECT biomero.record_events($1, $2::text[]::uuid[], $3, $4, $5, $6, $7)",
            &[
                &application,
                &ids,
                &versions,
                &topics,
                &states,
                &upstream,
                &upstream_id,
            ],
        );
        let arguments =
            || {
                format!(
                "record_events({}, lengths {lengths:?}, nulls {:?}, upstream {}, {upstream_id:?})",
                short(&application),
                [ids.is_none(), versions.is_none(), topics.is_none(), states.is_none()],
                short(&upstream)
            )
            };
        let mut errors = Expected::new();
        Self::name_errors(&application, &mut errors);
        if let (Some(ids), Some(versions), Some(topics), Some(states)) =
            (&ids, &versions, &topics, &states)
        {
            if lengths.iter().any(|length| *length != lengths[0]) {
                errors.push(SqlState::INVALID_PARAMETER_VALUE);
            } else if ids.iter().any(Option::is_none)
                || versions.iter().any(Option::is_none)
                || topics.iter().any(Option::is_none)
                || states.iter().any(Option::is_none)
            {
                errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
            }
            if versions.iter().any(|v| v.is_some_and(|v| v < 0))
                || topics
                    .iter()
                    .any(|t| t.as_ref().is_some_and(String::is_empty))
            {
                errors.push(SqlState::INVALID_PARAMETER_VALUE);
            }
        } else {
            errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
        }
        if upstream.is_some() || upstream_id.is_some() {
            Self::name_errors(&upstream, &mut errors);
            match upstream_id {
                None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
                Some(id) if id < 1 => errors.push(SqlState::INVALID_PARAMETER_VALUE),
                _ => {}
            }
        }
        if !errors.is_empty() {
            return self.expect_error("record_events", result, &errors, arguments);
        }
        let application = application.clone().unwrap();
        let events: Vec<Event> = (0..lengths[0])
            .map(|i| {
                let state = states.as_ref().unwrap()[i].as_ref().unwrap();
                Event {
                    originator_id: ids.as_ref().unwrap()[i].clone().unwrap(),
                    version: versions.as_ref().unwrap()[i].unwrap(),
                    topic: topics.as_ref().unwrap()[i].clone().unwrap(),
                    state_len: state.len(),
                    state_hash: fnv(state),
                }
            })
            .collect();
        // Work on a copy of the positions: a failed statement keeps none of its changes.
        let positions_before = self.model.positions.clone();
        if let (Some(upstream), Some(upstream_id)) = (&upstream, upstream_id) {
            match self.model_advance(&application, upstream, upstream_id) {
                None => {
                    return self.expect_error(
                        "record_events",
                        result,
                        &[SqlState::LOCK_NOT_AVAILABLE],
                        arguments,
                    )
                }
                Some(false) => {
                    if let Some(row) = self.expect_ok("record_events", result, arguments) {
                        let got: Option<Vec<i64>> = row.get(0);
                        self.check_equal("record_events", got, None, arguments);
                    }
                    return;
                }
                Some(true) => {}
            }
        }
        if events.is_empty() {
            if let Some(row) = self.expect_ok("record_events", result, arguments) {
                let got: Option<Vec<i64>> = row.get(0);
                self.check_equal("record_events", got, Some(vec![]), arguments);
            } else {
                self.model.positions = positions_before;
            }
            return;
        }
        if self.append_locked(&application) {
            self.model.positions = positions_before;
            return self.expect_error(
                "record_events",
                result,
                &[SqlState::LOCK_NOT_AVAILABLE],
                arguments,
            );
        }
        let mut keys = HashSet::new();
        let duplicate = events.iter().any(|event| {
            let key = (
                application.clone(),
                event.originator_id.clone(),
                event.version,
            );
            self.model.versions.contains(&key) || !keys.insert(key)
        });
        if duplicate {
            self.model.positions = positions_before;
            return self.expect_error(
                "record_events",
                result,
                &[SqlState::UNIQUE_VIOLATION],
                arguments,
            );
        }
        let Some(row) = self.expect_ok("record_events", result, arguments) else {
            self.model.positions = positions_before;
            return;
        };
        let got: Option<Vec<i64>> = row.get(0);
        let head = self.model.head(&application);
        let expected: Vec<i64> = (head + 1..=head + events.len() as i64).collect();
        self.check_equal("record_events", got, Some(expected), arguments);
        self.model.versions.extend(keys);
        self.model
            .events
            .entry(application)
            .or_default()
            .extend(events);
    }

    fn record_tracking(&mut self) {
        let (follower, upstream) = (self.name(), self.name());
        let id = self.id(50);
        let result = self.client.query_one(
            "SELECT biomero.record_tracking($1, $2, $3)",
            &[&follower, &upstream, &id],
        );
        let arguments = || {
            format!(
                "record_tracking({}, {}, {id:?})",
                short(&follower),
                short(&upstream)
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&follower, &mut errors);
        Self::name_errors(&upstream, &mut errors);
        match id {
            None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
            Some(id) if id < 1 => errors.push(SqlState::INVALID_PARAMETER_VALUE),
            _ => {}
        }
        if !errors.is_empty() {
            return self.expect_error("record_tracking", result, &errors, arguments);
        }
        let (follower, upstream, id) = (
            follower.clone().unwrap(),
            upstream.clone().unwrap(),
            id.unwrap(),
        );
        let before = self.model.positions.clone();
        match self.model_advance(&follower, &upstream, id) {
            None => self.expect_error(
                "record_tracking",
                result,
                &[SqlState::LOCK_NOT_AVAILABLE],
                arguments,
            ),
            Some(advanced) => match self.expect_ok("record_tracking", result, arguments) {
                Some(row) => {
                    let got: bool = row.get(0);
                    self.check_equal("record_tracking", got, advanced, arguments);
                }
                None => self.model.positions = before,
            },
        }
    }

    fn claim(&mut self) {
        let (follower, upstream) = (self.name(), self.name());
        let wait = self.flag();
        let result = self.client.query_one(
            "SELECT biomero.claim($1, $2, $3)",
            &[&follower, &upstream, &wait],
        );
        let arguments = || {
            format!(
                "claim({}, {}, {wait:?})",
                short(&follower),
                short(&upstream)
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&follower, &mut errors);
        Self::name_errors(&upstream, &mut errors);
        if wait.is_none() {
            errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
        }
        if !errors.is_empty() {
            return self.expect_error("claim", result, &errors, arguments);
        }
        let (follower, upstream) = (follower.clone().unwrap(), upstream.clone().unwrap());
        let expected = if self.claim_held(&follower, &upstream) {
            if wait == Some(true) {
                return self.expect_error(
                    "claim",
                    result,
                    &[SqlState::LOCK_NOT_AVAILABLE],
                    arguments,
                );
            }
            None
        } else {
            Some(
                self.model
                    .positions
                    .get(&(follower, upstream))
                    .copied()
                    .unwrap_or(0),
            )
        };
        if let Some(row) = self.expect_ok("claim", result, arguments) {
            let got: Option<i64> = row.get(0);
            self.check_equal("claim", got, expected, arguments);
        }
    }

    fn rows(rows: Vec<postgres::Row>) -> Vec<Row> {
        rows.iter()
            .map(|row| {
                let state: Vec<u8> = row.get(4);
                (
                    row.get(0),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    state.len(),
                    fnv(&state),
                )
            })
            .collect()
    }

    fn model_row(id: i64, event: &Event) -> Row {
        (
            id,
            event.originator_id.clone(),
            event.version,
            event.topic.clone(),
            event.state_len,
            event.state_hash,
        )
    }

    fn select_notifications(&mut self) {
        let application = self.name();
        let head = application
            .as_deref()
            .map_or(0, |application| self.model.head(application));
        let (start, limit, stop) = (self.id(head), self.limit(), self.id(head));
        let topics: Option<Vec<Option<String>>> = match self.rng.gen_range(0..100) {
            0..=4 => None,
            5..=49 => Some(vec![]),
            50..=54 => Some(vec![Some(String::new())]),
            55..=59 => Some(vec![Some("t".into()), None]),
            _ => Some(
                (0..self.rng.gen_range(1..4))
                    .map(|_| self.topic().filter(|t| !t.is_empty()))
                    .map(|t| t.or_else(|| Some("t".into())))
                    .collect(),
            ),
        };
        let inclusive = self.flag();
        let result = self.client.query(
            "SELECT notification_id, originator_id::text, originator_version, topic, state \
             FROM biomero.select_notifications($1, $2, $3, $4, $5, $6)",
            &[&application, &start, &limit, &stop, &topics, &inclusive],
        );
        let arguments = || {
            format!(
                "select_notifications({}, {start:?}, {limit:?}, {stop:?}, {:?}, {inclusive:?})",
                short(&application),
                topics.as_ref().map(|t| t
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.len()))
                    .collect::<Vec<_>>())
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&application, &mut errors);
        match limit {
            None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
            Some(limit) if limit < 0 => errors.push(SqlState::INVALID_PARAMETER_VALUE),
            _ => {}
        }
        match &topics {
            None => errors.push(SqlState::NULL_VALUE_NOT_ALLOWED),
            Some(topics) => {
                if topics.iter().any(Option::is_none) {
                    errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
                }
                if topics
                    .iter()
                    .any(|t| t.as_ref().is_some_and(String::is_empty))
                {
                    errors.push(SqlState::INVALID_PARAMETER_VALUE);
                }
            }
        }
        if inclusive.is_none() {
            errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
        }
        if !errors.is_empty() {
            return self.expect_error("select_notifications", result, &errors, arguments);
        }
        let application = application.clone().unwrap();
        let lower = match (start, inclusive.unwrap()) {
            (None, _) => i64::MIN,
            (Some(start), true) => start.saturating_sub(1),
            (Some(start), false) => start,
        };
        let upper = stop.unwrap_or(i64::MAX);
        let wanted: HashSet<String> = topics.clone().unwrap().into_iter().flatten().collect();
        let expected: Vec<Row> = self
            .model
            .events
            .get(&application)
            .map(|log| {
                log.iter()
                    .enumerate()
                    .map(|(index, event)| (index as i64 + 1, event))
                    .filter(|(id, event)| {
                        *id > lower
                            && *id <= upper
                            && (wanted.is_empty() || wanted.contains(&event.topic))
                    })
                    .take(usize::try_from(limit.unwrap()).unwrap_or(usize::MAX))
                    .map(|(id, event)| Self::model_row(id, event))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(rows) = self.expect_ok("select_notifications", result, arguments) {
            self.check_equal(
                "select_notifications",
                Self::rows(rows),
                expected,
                arguments,
            );
        }
    }

    fn select_events(&mut self) {
        let application = self.name();
        let originator = self.uuid();
        let (gt, lte) = (self.version(), self.version());
        let descending = self.flag();
        let limit = self.limit();
        let result = self.client.query(
            "SELECT notification_id, originator_id::text, originator_version, topic, state \
             FROM biomero.select_events($1, $2::text::uuid, $3, $4, $5, $6)",
            &[&application, &originator, &gt, &lte, &descending, &limit],
        );
        let arguments = || {
            format!(
                "select_events({}, {originator:?}, {gt:?}, {lte:?}, {descending:?}, {limit:?})",
                short(&application)
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&application, &mut errors);
        if originator.is_none() || descending.is_none() {
            errors.push(SqlState::NULL_VALUE_NOT_ALLOWED);
        }
        if limit.is_some_and(|limit| limit < 0) {
            errors.push(SqlState::INVALID_PARAMETER_VALUE);
        }
        if !errors.is_empty() {
            return self.expect_error("select_events", result, &errors, arguments);
        }
        let (application, originator) = (application.clone().unwrap(), originator.clone().unwrap());
        let (lower, upper) = (gt.unwrap_or(-1), lte.unwrap_or(i64::MAX));
        let mut expected: Vec<Row> = self
            .model
            .events
            .get(&application)
            .map(|log| {
                log.iter()
                    .enumerate()
                    .filter(|(_, event)| {
                        event.originator_id == originator
                            && event.version > lower
                            && event.version <= upper
                    })
                    .map(|(index, event)| Self::model_row(index as i64 + 1, event))
                    .collect()
            })
            .unwrap_or_default();
        expected.sort_by_key(|row| row.2);
        if descending == Some(true) {
            expected.reverse();
        }
        if let Some(limit) = limit {
            expected.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        if let Some(rows) = self.expect_ok("select_events", result, arguments) {
            self.check_equal("select_events", Self::rows(rows), expected, arguments);
        }
    }

    fn max_notification_id(&mut self) {
        let application = self.name();
        let result = self
            .client
            .query_one("SELECT biomero.max_notification_id($1)", &[&application]);
        let arguments = || format!("max_notification_id({})", short(&application));
        let mut errors = Expected::new();
        Self::name_errors(&application, &mut errors);
        if !errors.is_empty() {
            return self.expect_error("max_notification_id", result, &errors, arguments);
        }
        let head = self.model.head(application.as_deref().unwrap());
        if let Some(row) = self.expect_ok("max_notification_id", result, arguments) {
            let got: Option<i64> = row.get(0);
            self.check_equal(
                "max_notification_id",
                got,
                (head > 0).then_some(head),
                arguments,
            );
        }
    }

    fn max_tracking_id(&mut self) {
        let (follower, upstream) = (self.name(), self.name());
        let result = self.client.query_one(
            "SELECT biomero.max_tracking_id($1, $2)",
            &[&follower, &upstream],
        );
        let arguments = || {
            format!(
                "max_tracking_id({}, {})",
                short(&follower),
                short(&upstream)
            )
        };
        let mut errors = Expected::new();
        Self::name_errors(&follower, &mut errors);
        Self::name_errors(&upstream, &mut errors);
        if !errors.is_empty() {
            return self.expect_error("max_tracking_id", result, &errors, arguments);
        }
        let expected = self
            .model
            .positions
            .get(&(follower.clone().unwrap(), upstream.clone().unwrap()))
            .copied();
        if let Some(row) = self.expect_ok("max_tracking_id", result, arguments) {
            let got: Option<i64> = row.get(0);
            self.check_equal("max_tracking_id", got, expected, arguments);
        }
    }

    fn summary(&mut self) {
        let result = self.client.query_one("SELECT biomero.summary()::text", &[]);
        let Some(row) = self.expect_ok("summary", result, String::new) else {
            return;
        };
        let text: String = row.get(0);
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut applications: Vec<(String, i64, i64)> = document["applications"]
            .as_array()
            .unwrap()
            .iter()
            // Followers and names registered before any event are listed without a head.
            .filter(|a| a["event_count"].as_i64() != Some(0))
            .map(|a| {
                (
                    a["application_name"].as_str().unwrap().to_string(),
                    a["head_notification_id"].as_i64().unwrap(),
                    a["event_count"].as_i64().unwrap(),
                )
            })
            .collect();
        applications.sort();
        let mut expected: Vec<(String, i64, i64)> = self
            .model
            .events
            .iter()
            .filter(|(_, log)| !log.is_empty())
            .map(|(name, log)| (name.clone(), log.len() as i64, log.len() as i64))
            .collect();
        expected.sort();
        self.check_equal("summary", applications, expected, String::new);
        let mut followers: Vec<(String, String, i64)> = document["followers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["application_name"].as_str().unwrap().to_string(),
                    f["upstream_application_name"].as_str().unwrap().to_string(),
                    f["position"].as_i64().unwrap(),
                )
            })
            .collect();
        followers.sort();
        let mut expected: Vec<(String, String, i64)> = self
            .model
            .positions
            .iter()
            .map(|((f, u), p)| (f.clone(), u.clone(), *p))
            .collect();
        expected.sort();
        self.check_equal("summary", followers, expected, String::new);
    }

    /// The second session changes what it holds: it releases (rolls back) what it had, and
    /// then holds nothing, the claim of a pair, or the append lock of an application.
    fn change_held(&mut self) {
        self.holder.batch_execute("ROLLBACK").unwrap();
        self.held = Held::Nothing;
        match self.rng.gen_range(0..3) {
            0 => {}
            1 => {
                let follower = self.names.choose(&mut self.rng).unwrap().clone();
                let upstream = self.names.choose(&mut self.rng).unwrap().clone();
                self.holder.batch_execute("BEGIN").unwrap();
                let position = claim(&mut self.holder, &follower, &upstream);
                let key = (follower.clone(), upstream.clone());
                assert_eq!(
                    position,
                    self.model.positions.get(&key).copied().unwrap_or(0),
                    "claim in the second session"
                );
                self.held = Held::Claim { follower, upstream };
            }
            _ => {
                let application = self.names.choose(&mut self.rng).unwrap().clone();
                let aggregate = self.fresh_uuid();
                self.holder.batch_execute("BEGIN").unwrap();
                self.holder
                    .query_one(
                        "SELECT biomero.record_event($1, $2::text::uuid, 0, 't', '')",
                        &[&application, &aggregate],
                    )
                    .unwrap();
                self.held = Held::Append(application);
            }
        }
    }

    fn step(&mut self) {
        if self.rng.gen_bool(0.02) {
            self.change_held();
        }
        let function = match self.rng.gen_range(0..100) {
            0..=21 => "record_event",
            22..=43 => "record_events",
            44..=55 => "record_tracking",
            56..=65 => "claim",
            66..=79 => "select_notifications",
            80..=89 => "select_events",
            90..=94 => "max_notification_id",
            95..=98 => "max_tracking_id",
            _ => "summary",
        };
        *self.calls.entry(function).or_default() += 1;
        let started = Instant::now();
        match function {
            "record_event" => self.record_event(),
            "record_events" => self.record_events(),
            "record_tracking" => self.record_tracking(),
            "claim" => self.claim(),
            "select_notifications" => self.select_notifications(),
            "select_events" => self.select_events(),
            "max_notification_id" => self.max_notification_id(),
            "max_tracking_id" => self.max_tracking_id(),
            _ => self.summary(),
        }
        *self.time.entry(function).or_default() += started.elapsed();
    }

    /// Everything stored equals the model.
    fn check_store(&mut self) -> (i64, i64) {
        let (applications, events) = assert_store_invariants(&mut self.client);
        let mut stored: HashMap<String, Vec<Row>> = HashMap::new();
        for row in self
            .client
            .query(
                "SELECT notification_id, originator_id::text, originator_version, topic, state, \
                 application_name FROM biomero.events ORDER BY application_name, notification_id",
                &[],
            )
            .unwrap()
        {
            let application: String = row.get(5);
            stored
                .entry(application)
                .or_default()
                .extend(Self::rows(vec![row]));
        }
        let expected: HashMap<String, Vec<Row>> = self
            .model
            .events
            .iter()
            .filter(|(_, log)| !log.is_empty())
            .map(|(application, log)| {
                let rows = log
                    .iter()
                    .enumerate()
                    .map(|(index, event)| Self::model_row(index as i64 + 1, event))
                    .collect();
                (application.clone(), rows)
            })
            .collect();
        assert!(
            stored == expected,
            "the stored events differ from the model"
        );
        let positions: HashMap<(String, String), i64> = self
            .client
            .query(
                "SELECT application_name, upstream_application_name, notification_id \
                 FROM biomero.tracking",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
        assert_eq!(positions, self.model.positions, "stored positions differ");
        (applications, events)
    }
}

/// A name or topic for a failure message: its length and its first characters.
fn short(value: &Option<String>) -> String {
    match value {
        None => "NULL".into(),
        Some(text) if text.chars().count() > 40 => {
            format!(
                "{:?}… ({} chars)",
                text.chars().take(20).collect::<String>(),
                text.chars().count()
            )
        }
        Some(text) => format!("{text:?}"),
    }
}

#[test]
fn fuzz_every_function_with_random_and_hostile_arguments() {
    let seed = std::env::var("BIOMERO_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let calls = std::env::var("BIOMERO_FUZZ_CALLS")
        .ok()
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    eprintln!("fuzz: seed {seed} (BIOMERO_FUZZ_SEED={seed} replays this run), {calls} calls");
    let mut client = connect();
    let mut holder = connect();
    // A wait for the second session's lock ends quickly, as the documented 55P03; long
    // enough that autovacuum truncating the tables (which yields to a waiter within 20 ms)
    // does not end one too.
    client.batch_execute("SET lock_timeout = '200ms'").unwrap();
    holder.batch_execute("SET lock_timeout = '5s'").unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut names: Vec<String> = HOSTILE.iter().map(|name| name.to_string()).collect();
    names.push("é".repeat(MAX_NAME));
    names.push("😀".repeat(MAX_NAME));
    names.push(format!("{}'", "x".repeat(MAX_NAME - 1)));
    names.shuffle(&mut rng);
    names.truncate(10);
    // Registered up front: a first use registers the name, and a registration another
    // session has not committed yet is waited for, which the model does not follow.
    for name in &names {
        let _ = client.execute("SELECT biomero.set_append_mode($1, 'serialized')", &[name]);
    }
    let mut fuzz = Fuzz {
        rng,
        client,
        holder,
        held: Held::Nothing,
        model: Model::default(),
        names,
        huge_states: 0,
        small: false,
        calls: BTreeMap::new(),
        time: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        failures: BTreeMap::new(),
    };
    let started = Instant::now();
    for _ in 0..calls {
        fuzz.step();
    }
    fuzz.holder.batch_execute("ROLLBACK").unwrap();
    let elapsed = started.elapsed();
    let (applications, events) = fuzz.check_store();
    eprintln!(
        "fuzz: {calls} calls in {elapsed:.1?} ({} multi-MB states); per function {:?}",
        fuzz.huge_states, fuzz.calls
    );
    eprintln!("fuzz: outcomes {:?}", fuzz.outcomes);
    eprintln!("fuzz: time {:?}", fuzz.time);
    eprintln!(
        "fuzz: afterwards {events} events in {applications} applications, {} positions; \
         ids contiguous, versions unique, positions positive, tables present",
        fuzz.model.positions.len()
    );
    for (kind, (count, example)) in &fuzz.failures {
        eprintln!("fuzz: FAILURE x{count}: {kind}\n      e.g. {example}");
    }
    assert!(
        fuzz.failures.is_empty(),
        "{} kinds of undocumented behaviour (seed {seed}): {:?}",
        fuzz.failures.len(),
        fuzz.failures.keys().collect::<Vec<_>>()
    );
}

/// The README: "NULLs raise 22004". A NULL element in select_notifications' `topics` raises
/// XX000 "array contains NULL" instead (from converting the argument to `Vec<String>`,
/// before the function's own checks run); the random run above finds it too.
#[test]
fn fuzz_null_topic_element_in_select_notifications_raises_22004() {
    let mut client = connect();
    for topics in ["ARRAY[NULL]::text[]", "ARRAY['t', NULL]::text[]"] {
        let call = format!(
            "SELECT * FROM biomero.select_notifications('WorkflowTracker', 1, 5, topics => {topics})"
        );
        let error = client.batch_execute(&call).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::NULL_VALUE_NOT_ALLOWED),
            "{call}: {}",
            db_message(&error)
        );
    }
}
