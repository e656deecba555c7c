"""Turns one results file of bench/bench.py into docs/benchmarks.md and docs/benchmarks.png."""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RECORD_EVENT = "record_event"
RECORD_EVENT_OFF = "record_event notify=off"
LOCK = "LOCK TABLE + INSERT"
UNORDERED = "unordered INSERT"
RECORD_EVENTS = "record_events"
CLAIM = "claim loop (biomero)"
NAIVE = "naive loop (max+1, PK)"
SELECT_NOTIFICATIONS = "select_notifications"
PLAIN = "plain SELECT"

LABELS = {
    RECORD_EVENT: "biomero.record_event (notify on, default)",
    RECORD_EVENT_OFF: "biomero.record_event, biomero.notify = off",
    LOCK: "(a) eventsourcing: LOCK TABLE … IN EXCLUSIVE MODE + INSERT",
    UNORDERED: "(b) unordered bigserial INSERT, no lock (unsafe ceiling)",
    RECORD_EVENTS: "biomero.record_events (notify on, default)",
    CLAIM: "biomero: claim + select_notifications + read model + record_tracking",
    NAIVE: "naive: max(tracking) + read + read model + INSERT tracking (PK)",
    SELECT_NOTIFICATIONS: "biomero.select_notifications(app, start, 1000)",
    PLAIN: "plain indexed SELECT … ORDER BY notification_id LIMIT 1000",
}


class Results:
    def __init__(self, data):
        self.meta = data["meta"]
        self.points = data["points"]

    def rows(self, group, variant=None, **match):
        found = []
        for row in self.points:
            if row["group"] != group or (variant is not None and row["variant"] != variant):
                continue
            if all(row.get(key) == value for key, value in match.items()):
                found.append(row)
        return sorted(found, key=lambda row: (row.get("stored", 0), row["clients"]))

    def one(self, group, variant, **match):
        rows = self.rows(group, variant, **match)
        return rows[0] if rows else None

    def variants(self, group):
        seen = []
        for row in self.points:
            if row["group"] == group and row["variant"] not in seen:
                seen.append(row["variant"])
        return seen

    def clients(self, group):
        return sorted({row["clients"] for row in self.points if row["group"] == group})


def fmt_rate(value):
    if value is None:
        return "–"
    return f"{value:,.0f}"


def fmt_ms(value):
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}x"


def ratio(numerator, denominator):
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


# --------------------------------------------------------------------------------------------
# Targets


def targets(results):
    """[(target, measured, met, detail)] for the targets in docs/benchmarks.md."""
    out = []

    # 1. record_event >= 1.0x (a) at every client count (one application; default notify).
    for apps, variant, label in ((1, RECORD_EVENT, "1 application (notify on, default)"),
                                 (8, RECORD_EVENT, "8 applications (notify on, default)"),
                                 (8, RECORD_EVENT_OFF, "8 applications, biomero.notify = off")):
        group = f"append{apps}"
        ratios = []
        for clients in results.clients(group):
            mine = results.one(group, variant, clients=clients)
            base = results.one(group, LOCK, clients=clients)
            if mine and base:
                ratios.append((clients, ratio(mine["events_per_s"], base["events_per_s"])))
        if not ratios:
            continue
        worst = min(value for _, value in ratios)
        detail = ", ".join(f"{clients}: {value:.2f}x" for clients, value in ratios)
        out.append((f"record_event ≥ 1.0x (a) at every client count, {label}",
                    f"min {worst:.2f}x ({detail})", worst >= 1.0, worst / 1.0))

    # 2. 8 applications at 16 clients >= 4x one application at 16 clients.
    for variant, label in ((RECORD_EVENT, "notify on (default)"),
                           (RECORD_EVENT_OFF, "biomero.notify = off")):
        eight = results.one("append8", variant, clients=16)
        one = results.one("append1", variant, clients=16)
        if eight and one:
            value = ratio(eight["events_per_s"], one["events_per_s"])
            out.append((f"record_event, 8 applications ≥ 4x 1 application at 16 clients, {label}",
                        f"{value:.2f}x ({fmt_rate(eight['events_per_s'])} vs "
                        f"{fmt_rate(one['events_per_s'])} ev/s)", value >= 4.0, value / 4.0))

    # 3. batch of 100 >= 0.8x (a)'s batch of 100.
    ratios = []
    for clients in results.clients("batch100"):
        mine = results.one("batch100", RECORD_EVENTS, clients=clients)
        base = results.one("batch100", LOCK, clients=clients)
        if mine and base:
            ratios.append((clients, ratio(mine["events_per_s"], base["events_per_s"])))
    if ratios:
        worst = min(value for _, value in ratios)
        detail = ", ".join(f"{clients}: {value:.2f}x" for clients, value in ratios)
        out.append(("record_events batch of 100 ≥ 0.8x (a)'s batch of 100",
                    f"min {worst:.2f}x ({detail})", worst >= 0.8, worst / 0.8))

    # 4. select_notifications page <= 1.2x the plain SELECT (latency, 1 client).
    mine = results.one("read", SELECT_NOTIFICATIONS, clients=1)
    base = results.one("read", PLAIN, clients=1)
    if mine and base:
        p50 = ratio(mine["p50_ms"], base["p50_ms"])
        p99 = ratio(mine["p99_ms"], base["p99_ms"])
        out.append(("select_notifications 1,000-row page ≤ 1.2x plain SELECT (latency, 1 client)",
                    f"p50 {p50:.2f}x ({fmt_ms(mine['p50_ms'])} vs {fmt_ms(base['p50_ms'])} ms),"
                    f" p99 {p99:.2f}x", p50 <= 1.2, 1.2 / p50))

    # 5. growth: latency at the largest store within 1.3x of the empty store.
    levels = sorted({row["stored"] for row in results.points if row["group"] == "growth"})
    if len(levels) >= 2:
        low, high = levels[0], levels[-1]
        for variant, label in ((RECORD_EVENT, "append (record_event)"),
                               ("select_notifications page", "read (select_notifications page)")):
            first = results.one("growth", variant, stored=low)
            last = results.one("growth", variant, stored=high)
            if first and last:
                p50 = ratio(last["p50_ms"], first["p50_ms"])
                p99 = ratio(last["p99_ms"], first["p99_ms"])
                control = ""
                control_variant = ("control: unordered INSERT" if variant == RECORD_EVENT
                                   else "plain SELECT page")
                c_first = results.one("growth", control_variant, stored=low)
                c_last = results.one("growth", control_variant, stored=high)
                if c_first and c_last:
                    control = (f"; same-moment control ({control_variant}) "
                               f"{ratio(c_last['p50_ms'], c_first['p50_ms']):.2f}x")
                out.append((f"{label} latency at {high:,} stored ≤ 1.3x the empty store",
                            f"p50 {p50:.2f}x ({fmt_ms(last['p50_ms'])} vs "
                            f"{fmt_ms(first['p50_ms'])} ms), p99 {p99:.2f}x{control}",
                            p50 <= 1.3, 1.3 / p50))
    return out


# --------------------------------------------------------------------------------------------
# Tables


def scenario_table(results, group, variants=None, extra_columns=()):
    variants = variants or results.variants(group)
    lines = ["| approach | clients | events/s | p50 ms | p99 ms |"
             + "".join(f" {title} |" for title, _ in extra_columns),
             "|---|---:|---:|---:|---:|" + "---:|" * len(extra_columns)]
    for variant in variants:
        for row in results.rows(group, variant):
            cells = [LABELS.get(variant, variant), str(row["clients"]),
                     fmt_rate(row["events_per_s"]), fmt_ms(row["p50_ms"]), fmt_ms(row["p99_ms"])]
            cells += [str(key(row)) for _, key in extra_columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(results, group, mine, bases):
    header = "| clients | " + " | ".join(f"{mine} / {base}" for base in bases) + " |"
    lines = [header, "|---:|" + "---:|" * len(bases)]
    for clients in results.clients(group):
        own = results.one(group, mine, clients=clients)
        cells = []
        for base in bases:
            other = results.one(group, base, clients=clients)
            cells.append(fmt_ratio(ratio(own and own["events_per_s"],
                                         other and other["events_per_s"])))
        lines.append(f"| {clients} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth_table(results):
    lines = ["| events stored | measured | events/s | p50 ms | p99 ms | p50 vs empty store |",
             "|---:|---|---:|---:|---:|---:|"]
    levels = sorted({row["stored"] for row in results.points if row["group"] == "growth"})
    for variant in results.variants("growth"):
        base = results.one("growth", variant, stored=levels[0]) if levels else None
        for level in levels:
            row = results.one("growth", variant, stored=level)
            if not row:
                continue
            label = {"record_event": "append: biomero.record_event, 1 client",
                     "control: unordered INSERT": "control: unordered INSERT into a small table",
                     "select_notifications page": "read: select_notifications, 1,000-row page",
                     "plain SELECT page": "read: plain SELECT, same page"}.get(variant, variant)
            lines.append(f"| {level:,} | {label} | {fmt_rate(row['events_per_s'])} |"
                         f" {fmt_ms(row['p50_ms'])} | {fmt_ms(row['p99_ms'])} |"
                         f" {fmt_ratio(ratio(row['p50_ms'], base and base['p50_ms']))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plot


def plot(results, path):
    panels = [
        ("append1", "Single-event appends, 1 application", "clients"),
        ("append8", "Single-event appends, 8 applications", "clients"),
        ("batch10", "Batches of 10 events, 1 application", "clients"),
        ("batch100", "Batches of 100 events, 1 application", "clients"),
        ("follower", "Follower loop, competing processes of 1 follower", "processes"),
        ("read", "1,000-row page reads", "clients"),
    ]
    panels = [panel for panel in panels if results.rows(panel[0])]
    columns = 2
    rows = max(1, (len(panels) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 4.2 * rows), squeeze=False)
    styles = {
        RECORD_EVENT: ("tab:blue", "o", "-"), RECORD_EVENTS: ("tab:blue", "o", "-"),
        RECORD_EVENT_OFF: ("tab:cyan", "s", "--"), LOCK: ("tab:red", "^", "-"),
        UNORDERED: ("tab:gray", "v", ":"), CLAIM: ("tab:blue", "o", "-"),
        NAIVE: ("tab:red", "^", "-"), SELECT_NOTIFICATIONS: ("tab:blue", "o", "-"),
        PLAIN: ("tab:gray", "v", ":"),
    }
    for index, (group, title, xlabel) in enumerate(panels):
        axis = axes[index // columns][index % columns]
        for variant in results.variants(group):
            data = results.rows(group, variant)
            color, marker, line = styles.get(variant, (None, "o", "-"))
            label = LABELS.get(variant, variant)
            if group == "follower" and variant == NAIVE:
                errors = sum(row["errors"] for row in data)
                label += f" ({errors:,} duplicate-key errors)"
            axis.plot([row["clients"] for row in data], [row["events_per_s"] for row in data],
                      marker=marker, linestyle=line, color=color, label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        ticks = results.clients(group)
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(tick) for tick in ticks])
        axis.set_title(title, fontsize=11)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("events/s (log)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7.5, loc="best")
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    machine = results.meta["machine"]
    figure.suptitle(
        f"biomero_tracking benchmark, {results.meta.get('started', '')}: {machine['nproc']} cores,"
        f" {machine['memory']}, PostgreSQL {results.meta['settings'].get('server_version')}"
        " (absolute figures are for this run only; compare within a panel)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# Markdown


def markdown(results, command, png_name):
    meta = results.meta
    machine = meta["machine"]
    settings = meta["settings"]
    library = meta.get("library", {})
    seconds = meta["seconds_per_point"]
    out = []
    add = out.append

    add("# Benchmarks")
    add("")
    add("Reproduce (from a fresh clone, after `bash scripts/setup.sh`; as root, like the other"
        " scripts):")
    add("")
    add("```sh")
    add(command)
    add("```")
    add("")
    add("It builds the release package of the working tree (`cargo pgrx package`; `BENCH_REF=HEAD`"
        " builds a git revision instead), runs PostgreSQL from a private copy of the system's"
        " installation with that package in it (so a reinstall of the extension during the run"
        " changes nothing), starts its own throwaway cluster, prints the server settings, runs"
        " every scenario below in one run"
        f" (about {meta.get('elapsed_seconds', 0) / 60:.0f} minutes here), and rewrites this file"
        " and `docs/benchmarks.png` from the results (raw results: `bench/results/*.json`)."
        " `BENCH_QUICK=1 bash scripts/bench.sh` is a short smoke run that writes its report under"
        " `bench/results/` instead. It is not part of the tests.")
    add("")
    add("**Claims are ratios between approaches measured in the same run.** The machine is a"
        " shared, noisy 2-core VM whose disk flush latency moves several-fold between runs, so the"
        " absolute events/s below are for this run only.")
    add("")

    add("## Targets")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    target_rows = targets(results)
    for name, measured, met, margin in target_rows:
        if met:
            verdict = "yes"
        elif "≤" in name:
            verdict = f"**no** ({(1 / margin - 1) * 100:.0f}% over)"
        else:
            verdict = f"**no** ({(1 - margin) * 100:.0f}% short)"
        add(f"| {name} | {measured} | {verdict} |")
    add("")

    add("## This run")
    add("")
    add(f"- Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} memory,"
        f" {machine['os']}, kernel {machine['kernel']}; the server, pgbench and the Python"
        " driver share the cores.")
    add(f"- PostgreSQL {settings.get('server_version')}; {machine['pgbench']};"
        f" Python {machine['python']} with psycopg2 {machine['psycopg2']}.")
    add(f"- Library measured: {library.get('built', '?')}, commit {library.get('commit', '?')}"
        f" ({library.get('uncommitted_source_files', '?')} uncommitted source files),"
        f" sha256 {library.get('sha256', '?')}…, {library.get('bytes', 0) / 1e6:.1f} MB"
        + (f"; extension version {meta['extension_version']}, its SQL scripts from the same"
           " package." if meta.get("extension_version") else "."))
    if meta.get("setup_sql"):
        add(f"- Changed before measuring: `{meta['setup_sql']}` was run in the benchmark database.")
    add(f"- Run: {meta.get('started')} to {meta.get('finished')},"
        f" {meta.get('elapsed_seconds', 0) / 60:.1f} minutes; {seconds:g} s per point, split in"
        f" {meta['rounds']} rounds whose order alternates between the compared approaches.")
    add("")
    add("Server settings (PostgreSQL's defaults except the ones the script sets, marked *):")
    add("")
    add("| setting | value |")
    add("|---|---|")
    changed = meta.get("changed_settings", {})
    for name, value in settings.items():
        mark = " *" if name in ("shared_buffers", "max_wal_size", "checkpoint_timeout",
                                "max_connections") else ""
        add(f"| {name} | {value}{mark} |")
    add("")
    others = {name: value for name, value in changed.items()
              if name not in settings and name not in ("listen_addresses", "port",
                                                       "unix_socket_directories")}
    if others:
        add("Other settings not at their built-in default (from initdb): "
            + ", ".join(f"`{name}={value}`" for name, value in sorted(others.items())) + ".")
        add("")

    add("## How each scenario is measured")
    add("")
    add(f"- Event: topic `{meta['topic']}`, a {meta['state_bytes']}-byte JSON state as bytea, a"
        " fresh `gen_random_uuid()` originator at version 0 (all approaches generate it"
        " server-side).")
    add("- Appends and reads: pgbench, `-M prepared`, `-j min(clients, 2)`, per-transaction logs"
        " for p50/p99. Latency is the whole transaction as pgbench sees it. events/s ="
        " transactions/s × events per transaction.")
    add("- record_event is one autocommitted statement. Baseline (a) is what eventsourcing's"
        " PostgreSQL recorder sends: `BEGIN; LOCK TABLE {app}_events IN EXCLUSIVE MODE;"
        " INSERT … RETURNING notification_id; COMMIT` on its table (bigserial `notification_id`"
        " with a unique index, primary key (originator_id, originator_version)). Baseline (b) is"
        " the same INSERT alone: no order for readers (a later id can commit first), the ceiling.")
    add("- 8 applications: each client appends to application `client_id % 8` (a process per"
        " application, as in BIOMERO); for (a) and (b) that is 8 tables, as eventsourcing creates"
        " one per application. At 1 and 4 clients only 1 and 4 applications are busy.")
    add("- `biomero.notify`: record_event with the default (on: `pg_notify` per append) and with"
        " `PGOPTIONS='-c biomero.notify=off'`. PostgreSQL serializes the commits of notifying"
        " transactions in a database, so the multi-application figures are given both ways.")
    add("- Batches: one call/transaction of 10 or 100 events of one application;"
        " record_events receives arrays built server-side (`ARRAY(SELECT gen_random_uuid() …)`,"
        " `array_fill`), the baselines `INSERT … SELECT … FROM generate_series(1, n)`.")
    add("- Follower loop: Python (psycopg2, one process and connection per competing processor),"
        " one notification per transaction: biomero = `claim` → `select_notifications(start =>"
        " position, limit 1, inclusive_of_start => false)` → INSERT into a read-model table →"
        " `record_tracking` → COMMIT; naive = `SELECT max(notification_id)` from an"
        " eventsourcing 9.2/9.3 multi-row tracking table (primary key (application_name,"
        " notification_id)) → the next row of an eventsourcing events table → the same read-model"
        " INSERT → INSERT tracking → COMMIT, where a duplicate-key error is counted and rolled back."
        " events/s counts committed notifications; latency is per committed transaction.")
    add("- Reads: a random 1,000-row page of an application holding"
        f" {meta.get('read_events', 0):,} events,"
        " `SELECT * FROM biomero.select_notifications(app, start, 1000)` against the plain"
        " `SELECT … FROM biomero.events WHERE application_name = … AND notification_id >= start"
        " ORDER BY notification_id LIMIT 1000`. events/s = rows/s.")
    add("- Growth: events bulk-loaded with `INSERT … SELECT generate_series` straight into"
        " `biomero.events` (superuser; 10 events per random-uuid aggregate), then `VACUUM"
        " (ANALYZE)` and `CHECKPOINT`. At each size: record_event at 1 client into the grown"
        " application, alternated with a control (unordered INSERT into a small, fresh table,"
        " which moves only with the machine), after a short unmeasured warm-up; then `ANALYZE`"
        " and random 1,000-row pages of the grown application, select_notifications alternated"
        " with the plain SELECT. Growth points run twice as long as the others. At 0 the"
        " application holds only the events the append step itself wrote.")
    add("")

    add("## Results")
    add("")
    add(f"![throughput against clients]({png_name})")
    add("")
    add("### Single-event appends, 1 application")
    add("")
    add(scenario_table(results, "append1"))
    add("")
    add(ratio_table(results, "append1", RECORD_EVENT, [LOCK, UNORDERED]))
    add("")
    add("### Single-event appends, 8 applications")
    add("")
    add(scenario_table(results, "append8"))
    add("")
    add(ratio_table(results, "append8", RECORD_EVENT, [LOCK, UNORDERED]))
    add("")
    add(ratio_table(results, "append8", RECORD_EVENT_OFF, [LOCK, UNORDERED]))
    add("")
    scaling = ["| clients | record_event, 8 apps / 1 app (notify on) |"
               " record_event, 8 apps / 1 app (notify off) | (a) 8 / 1 | (b) 8 / 1 |",
               "|---:|---:|---:|---:|---:|"]
    for clients in results.clients("append8"):
        cells = []
        for variant in (RECORD_EVENT, RECORD_EVENT_OFF, LOCK, UNORDERED):
            eight = results.one("append8", variant, clients=clients)
            one = results.one("append1", variant, clients=clients)
            cells.append(fmt_ratio(ratio(eight and eight["events_per_s"],
                                         one and one["events_per_s"])))
        scaling.append(f"| {clients} | " + " | ".join(cells) + " |")
    add("\n".join(scaling))
    add("")
    for size in (10, 100):
        add(f"### Batches of {size} events per call, 1 application")
        add("")
        add(scenario_table(results, f"batch{size}"))
        add("")
        add(ratio_table(results, f"batch{size}", RECORD_EVENTS, [LOCK, UNORDERED]))
        add("")
    add("### Follower loop, competing processes of one follower")
    add("")
    add(scenario_table(results, "follower", extra_columns=(
        ("errors", lambda row: f"{row['errors']:,}"),
        ("errors / s", lambda row: f"{row['errors'] / row['seconds']:,.0f}" if row["seconds"] else "–"),
        ("processed twice", lambda row: row.get("duplicates", "–")),
        ("skipped", lambda row: row.get("skipped", "–")),
    )).replace("| clients |", "| processes |"))
    add("")
    add("### 1,000-row pages")
    add("")
    add(scenario_table(results, "read"))
    add("")
    read_lines = ["| clients | select_notifications / plain: p50 | p99 | throughput |",
                  "|---:|---:|---:|---:|"]
    for clients in results.clients("read"):
        mine = results.one("read", SELECT_NOTIFICATIONS, clients=clients)
        base = results.one("read", PLAIN, clients=clients)
        if mine and base:
            read_lines.append(
                f"| {clients} | {fmt_ratio(ratio(mine['p50_ms'], base['p50_ms']))} |"
                f" {fmt_ratio(ratio(mine['p99_ms'], base['p99_ms']))} |"
                f" {fmt_ratio(ratio(mine['events_per_s'], base['events_per_s']))} |")
    add("\n".join(read_lines))
    add("")
    add("### Growth")
    add("")
    add(growth_table(results))
    loads = meta.get("load_seconds", {})
    if loads:
        add("")
        add("Bulk-load time: " + ", ".join(f"{int(level):,} events: {value:.0f} s"
                                           for level, value in loads.items()) + ".")
    add("")
    notes = Path(__file__).with_name("analysis.md")
    if notes.exists():
        add(notes.read_text().strip())
        add("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--md", required=True)
    parser.add_argument("--png", required=True)
    parser.add_argument("--command", default="bash scripts/bench.sh")
    arguments = parser.parse_args()
    results = Results(json.loads(Path(arguments.results).read_text()))
    md = Path(arguments.md)
    png = Path(arguments.png)
    md.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    md.write_text(markdown(results, arguments.command, png.name))
    for name, measured, met, _margin in targets(results):
        print(f"{'MET   ' if met else 'MISSED'} {name}: {measured}")


if __name__ == "__main__":
    main()
