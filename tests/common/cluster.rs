//! Servers of their own, for the test binaries that include this file as a module: a test
//! that needs other settings (no shared_preload_libraries, another encoding) or a streaming
//! replica starts a cluster from the test server's installation.

#![allow(dead_code)] // each test binary uses a part of it

use crate::common::{
    must_run_as_server_owner, pg_bin, retry_connect, run_as_server_owner, unique_name,
};
use postgres::Client;

/// A cluster started by a test, stopped (immediately) and removed when dropped.
pub struct Cluster {
    pub data: String,
    pub port: u16,
}

/// A session to `database` of the cluster on `port` (for threads, which take the port along
/// rather than the cluster).
pub fn try_connect_to_cluster(port: u16, database: &str) -> Result<Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(database)
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect(postgres::NoTls)
}

/// A TCP port that no process listens on at the moment, for a new cluster.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new cluster (initdb with `initdb_args`) started with `settings` (`name=value`).
    pub fn start(name: &str, initdb_args: &[&str], settings: &[&str]) -> Cluster {
        let data = format!(
            "{}/{}",
            std::env::var("CARGO_PGRX_TEST_PGDATA").unwrap_or_else(|_| "/var/tmp/pgrx-test".into()),
            unique_name(name)
        );
        let initdb = format!("{}/initdb", pg_bin());
        let mut args = vec!["-D", &data, "-A", "trust", "--no-sync", "-U", "postgres"];
        args.extend_from_slice(initdb_args);
        must_run_as_server_owner(&initdb, &args);
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.launch(settings);
        cluster
    }

    /// A streaming replica of `primary` (pg_basebackup -R), started as a hot standby.
    pub fn replica_of(primary: &Cluster, settings: &[&str]) -> Cluster {
        let data = format!("{}-replica", primary.data);
        let port = primary.port.to_string();
        must_run_as_server_owner(
            &format!("{}/pg_basebackup", pg_bin()),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                // A fast checkpoint: a spread one can take minutes.
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.launch(settings);
        cluster
    }

    fn launch(&self, settings: &[&str]) {
        let mut options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=100 \
             -c fsync=off -c log_min_messages=warning",
            self.port
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = format!("{}/server.log", self.data);
        must_run_as_server_owner(
            &format!("{}/pg_ctl", pg_bin()),
            &[
                "-D", &self.data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
    }

    /// Runs pg_ctl on this cluster with `args`, which must succeed.
    pub fn pg_ctl(&self, args: &[&str]) {
        let mut all = vec!["-D", self.data.as_str()];
        all.extend_from_slice(args);
        must_run_as_server_owner(&format!("{}/pg_ctl", pg_bin()), &all);
    }

    /// Starts a stopped (or crashed) cluster again with `settings`.
    pub fn start_again(&self, settings: &[&str]) {
        self.launch(settings);
    }

    /// Stops with `mode` (fast, immediate) and starts again with `settings`.
    pub fn restart(&self, mode: &str, settings: &[&str]) {
        self.pg_ctl(&["-m", mode, "-w", "stop"]);
        self.launch(settings);
    }

    /// A session to `database` of this cluster, or the error.
    pub fn try_connect(&self, database: &str) -> Result<Client, postgres::Error> {
        try_connect_to_cluster(self.port, database)
    }

    /// A session to `database` of this cluster.
    pub fn connect(&self, database: &str) -> Client {
        self.try_connect(database)
            .unwrap_or_else(|error| panic!("connect to {database} on port {}: {error}", self.port))
    }

    /// A session, retrying while the server starts, recovers or restarts.
    pub fn connect_when_ready(&self, database: &str) -> Client {
        retry_connect(
            &format!("the cluster on port {}", self.port),
            std::time::Duration::from_secs(60),
            || self.try_connect(database),
        )
    }

    /// A database with the extension created in it.
    pub fn database_with_extension(&self, name: &str) -> Client {
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut client = self.connect(name);
        client
            .batch_execute("CREATE EXTENSION biomero_tracking")
            .unwrap();
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", pg_bin());
        let _ = run_as_server_owner(
            &pg_ctl,
            &["-D", &self.data, "-m", "immediate", "-w", "stop"],
        );
        let _ = run_as_server_owner("rm", &["-rf", &self.data]);
    }
}
