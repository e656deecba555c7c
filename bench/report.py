"""Turns one results file of bench/bench.py into docs/benchmarks.md and docs/benchmarks.png."""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from variants import (
    BATCH_CONCURRENT,
    BATCH_SERIALIZED,
    CLAIM,
    CONCURRENT,
    LOCK,
    LOCK_QUIET,
    MODES,
    NAIVE,
    SERIALIZED,
    SERIALIZED_QUIET,
    UNORDERED,
    WAKE_CONCURRENT,
    WAKE_SERIALIZED,
    plain_select,
    select_notifications,
)

LABELS = {
    SERIALIZED: "biomero.record_event, serialized mode (notify on, default)",
    SERIALIZED_QUIET: "biomero.record_event, serialized mode, biomero.notify = off",
    CONCURRENT: "biomero.record_event, concurrent mode",
    BATCH_SERIALIZED: "biomero.record_events, serialized mode (notify on, default)",
    BATCH_CONCURRENT: "biomero.record_events, concurrent mode",
    LOCK: "(a) eventsourcing 9.5: LOCK TABLE … IN EXCLUSIVE MODE + NOTIFY + INSERT",
    LOCK_QUIET: "(a′) the same without NOTIFY (not what eventsourcing sends)",
    UNORDERED: "(b) unordered bigserial INSERT, no lock, no NOTIFY (unsafe ceiling)",
    CLAIM: "biomero: claim + select_notifications + read model + record_tracking",
    NAIVE: "naive: max(tracking) + read + read model + INSERT tracking (PK)",
    **{
        select_notifications(
            mode
        ): f"biomero.select_notifications(app, start, 1000), {mode} application"
        for mode in MODES
    },
    **{
        plain_select(mode): f"plain indexed SELECT … LIMIT 1000, {mode} application"
        for mode in MODES
    },
}
SHORT = {
    SERIALIZED: "serialized",
    SERIALIZED_QUIET: "serialized, notify off",
    CONCURRENT: "concurrent",
    BATCH_SERIALIZED: "serialized",
    BATCH_CONCURRENT: "concurrent",
    LOCK: "(a)",
    LOCK_QUIET: "(a′)",
    UNORDERED: "(b)",
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
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}x"


def ratio(numerator, denominator):
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


# --------------------------------------------------------------------------------------------
# Targets


class Target:
    """One row of a targets table: `value` is compared with `bound` (≥ or ≤)."""

    def __init__(self, name, measured, value, bound, at_least=True):
        self.name = name
        self.measured = measured
        self.value = value
        self.bound = bound
        self.at_least = at_least

    @property
    def met(self):
        if self.value is None:
            return None
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def verdict(self):
        if self.met is None:
            return "reported" if self.bound is None else "not measured"
        if self.met:
            return "yes"
        gap = 1 - self.value / self.bound if self.at_least else self.value / self.bound - 1
        # A miss that rounds to the bound in the measured column still shows its size.
        percent = f"{gap * 100:.1f}" if gap < 0.01 else f"{gap * 100:.0f}"
        return f"**no** ({percent}% {'short' if self.at_least else 'over'})"


def throughput_target(results, name, group, mine, base, bound, clients=None):
    """mine / base in events/s, the lowest over `clients` (every measured count if None)."""
    ratios = []
    for count in clients or results.clients(group):
        own = results.one(group, mine, clients=count)
        other = results.one(group, base, clients=count)
        if own and other:
            ratios.append((count, ratio(own["events_per_s"], other["events_per_s"])))
    if not ratios:
        return None
    worst = min(value for _, value in ratios)
    detail = ", ".join(f"{count}: {value:.2f}x" for count, value in ratios)
    return Target(name, f"min {worst:.2f}x ({detail})", worst, bound)


def read_target(results, mode):
    mine = results.one("read", select_notifications(mode), clients=1)
    base = results.one("read", plain_select(mode), clients=1)
    if not (mine and base):
        return None
    p50 = ratio(mine["p50_ms"], base["p50_ms"])
    p99 = ratio(mine["p99_ms"], base["p99_ms"])
    return Target(
        f"{mode.capitalize()} application: select_notifications 1,000-row page"
        " ≤ 1.2x the plain SELECT (p50 latency, 1 client)",
        f"p50 {p50:.2f}x ({fmt_ms(mine['p50_ms'])} vs {fmt_ms(base['p50_ms'])} ms), p99 {p99:.2f}x",
        p50,
        1.2,
        at_least=False,
    )


def wakeup_target(results):
    cells = []
    for variant, label in ((WAKE_CONCURRENT, "concurrent"), (WAKE_SERIALIZED, "serialized")):
        row = results.one("wakeup", variant)
        if row and row.get("wake_samples"):
            cells.append(
                f"{label}: p50 {fmt_ms(row['wake_p50_ms'])} ms,"
                f" p99 {fmt_ms(row['wake_p99_ms'])} ms"
                f" ({row['wake_samples']:,} samples, {row['wake_missed']} missed)"
            )
    if not cells:
        return None
    row = results.one("wakeup", WAKE_CONCURRENT)
    writers = row["writers"] if row else "?"
    listeners = row["listeners"] if row else "?"
    return Target(
        f"Wake-up latency with listeners woken ({writers} writers, {listeners}"
        " listeners): p50 and p99 reported",
        "; ".join(cells),
        None,
        None,
    )


def targets(results):
    """The targets of concurrent appends, then those carried from earlier releases."""
    current = [
        throughput_target(
            results,
            "Concurrent record_event, 1 application ≥ 0.8x (b) at 16 and 64 clients",
            "append1",
            CONCURRENT,
            UNORDERED,
            0.8,
            clients=(16, 64),
        ),
        throughput_target(
            results,
            "Concurrent record_events, batches of 100 ≥ 0.8x (b)'s batch of 100",
            "batch100",
            BATCH_CONCURRENT,
            UNORDERED,
            0.8,
        ),
        wakeup_target(results),
        throughput_target(
            results,
            "Serialized record_event (notify on) ≥ 1.0x (a) at 1, 4, 16"
            " and 64 clients, 1 application",
            "append1",
            SERIALIZED,
            LOCK,
            1.0,
        ),
        throughput_target(
            results,
            "Serialized record_events, batches of 100 ≥ 0.8x (a)'s batch of 100",
            "batch100",
            BATCH_SERIALIZED,
            LOCK,
            0.8,
        ),
        read_target(results, "serialized"),
        read_target(results, "concurrent"),
    ]
    earlier = []
    for variant, label in ((SERIALIZED, "notify on"), (SERIALIZED_QUIET, "notify off")):
        eight = results.one("append8", variant, clients=16)
        one = results.one("append1", variant, clients=16)
        if eight and one:
            value = ratio(eight["events_per_s"], one["events_per_s"])
            earlier.append(
                Target(
                    f"Serialized record_event, 8 applications ≥ 4x 1 application at 16 clients,"
                    f" {label}",
                    f"{value:.2f}x ({fmt_rate(eight['events_per_s'])} vs"
                    f" {fmt_rate(one['events_per_s'])} ev/s)",
                    value,
                    4.0,
                )
            )
    levels = sorted({row["stored"] for row in results.points if row["group"] == "growth"})
    if len(levels) >= 2:
        low, high = levels[0], levels[-1]
        for variant, control_variant, label in (
            ("record_event", "control: unordered INSERT", "Append (record_event)"),
            ("select_notifications page", "plain SELECT page", "Read (select_notifications page)"),
        ):
            first = results.one("growth", variant, stored=low)
            last = results.one("growth", variant, stored=high)
            if not (first and last):
                continue
            p50 = ratio(last["p50_ms"], first["p50_ms"])
            p99 = ratio(last["p99_ms"], first["p99_ms"])
            control = ""
            c_first = results.one("growth", control_variant, stored=low)
            c_last = results.one("growth", control_variant, stored=high)
            if c_first and c_last:
                control = (
                    f"; same-moment control ({control_variant})"
                    f" {ratio(c_last['p50_ms'], c_first['p50_ms']):.2f}x"
                )
            earlier.append(
                Target(
                    f"{label} latency at {high:,} stored ≤ 1.3x the empty store",
                    f"p50 {p50:.2f}x ({fmt_ms(last['p50_ms'])} vs {fmt_ms(first['p50_ms'])} ms),"
                    f" p99 {p99:.2f}x{control}",
                    p50,
                    1.3,
                    at_least=False,
                )
            )
    return [target for target in current if target], earlier


# --------------------------------------------------------------------------------------------
# Tables


def scenario_table(results, group, variants=None, extra_columns=(), first_column="clients"):
    variants = variants or results.variants(group)
    lines = [
        f"| approach | {first_column} | events/s | p50 ms | p99 ms |"
        + "".join(f" {title} |" for title, _ in extra_columns),
        "|---|---:|---:|---:|---:|" + "---:|" * len(extra_columns),
    ]
    for variant in variants:
        for row in results.rows(group, variant):
            cells = [
                LABELS.get(variant, variant),
                str(row["clients"]),
                fmt_rate(row["events_per_s"]),
                fmt_ms(row["p50_ms"]),
                fmt_ms(row["p99_ms"]),
            ]
            cells += [str(key(row)) for _, key in extra_columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(results, group, pairs):
    """Throughput ratios per client count; pairs of (mine, base) variant names."""
    header = (
        "| clients | "
        + " | ".join(f"{SHORT.get(mine, mine)} / {SHORT.get(base, base)}" for mine, base in pairs)
        + " |"
    )
    lines = [header, "|---:|" + "---:|" * len(pairs)]
    for clients in results.clients(group):
        cells = []
        for mine, base in pairs:
            own = results.one(group, mine, clients=clients)
            other = results.one(group, base, clients=clients)
            cells.append(
                fmt_ratio(ratio(own and own["events_per_s"], other and other["events_per_s"]))
            )
        lines.append(f"| {clients} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(results):
    """Throughput with 8 applications over 1 application, per approach."""
    variants = (CONCURRENT, SERIALIZED, SERIALIZED_QUIET, LOCK, LOCK_QUIET, UNORDERED)
    lines = [
        "| clients | "
        + " | ".join(f"{SHORT[variant]}, 8 apps / 1 app" for variant in variants)
        + " |",
        "|---:|" + "---:|" * len(variants),
    ]
    for clients in results.clients("append8"):
        cells = []
        for variant in variants:
            eight = results.one("append8", variant, clients=clients)
            one = results.one("append1", variant, clients=clients)
            cells.append(
                fmt_ratio(ratio(eight and eight["events_per_s"], one and one["events_per_s"]))
            )
        lines.append(f"| {clients} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wakeup_table(results):
    lines = [
        "| listeners are woken by | writers | writers' events/s | append p50 ms |"
        " append p99 ms | wake-up p50 ms | wake-up p99 ms | wake-up max ms | samples |"
        " missed | notifications per listener |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in results.variants("wakeup"):
        row = results.one("wakeup", variant)
        lines.append(
            f"| {variant} | {row['writers']} | {fmt_rate(row['events_per_s'])} |"
            f" {fmt_ms(row['p50_ms'])} | {fmt_ms(row['p99_ms'])} |"
            f" {fmt_ms(row['wake_p50_ms'])} | {fmt_ms(row['wake_p99_ms'])} |"
            f" {fmt_ms(row['wake_max_ms'])} | {row['wake_samples']:,} | {row['wake_missed']} |"
            f" {row['notifications_per_listener']:,} |"
        )
    return "\n".join(lines)


def read_ratio_table(results):
    lines = [
        "| clients | application | select_notifications / plain: p50 | p99 | throughput |",
        "|---:|---|---:|---:|---:|",
    ]
    for clients in results.clients("read"):
        for mode in MODES:
            mine = results.one("read", select_notifications(mode), clients=clients)
            base = results.one("read", plain_select(mode), clients=clients)
            if mine and base:
                lines.append(
                    f"| {clients} | {mode} | {fmt_ratio(ratio(mine['p50_ms'], base['p50_ms']))} |"
                    f" {fmt_ratio(ratio(mine['p99_ms'], base['p99_ms']))} |"
                    f" {fmt_ratio(ratio(mine['events_per_s'], base['events_per_s']))} |"
                )
    return "\n".join(lines)


def growth_table(results):
    lines = [
        "| events stored | measured | events/s | p50 ms | p99 ms | p50 vs empty store |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    levels = sorted({row["stored"] for row in results.points if row["group"] == "growth"})
    for variant in results.variants("growth"):
        base = results.one("growth", variant, stored=levels[0]) if levels else None
        for level in levels:
            row = results.one("growth", variant, stored=level)
            if not row:
                continue
            label = {
                "record_event": "append: biomero.record_event (serialized), 1 client",
                "control: unordered INSERT": "control: unordered INSERT into a small table",
                "select_notifications page": "read: select_notifications, 1,000-row page",
                "plain SELECT page": "read: plain SELECT, same page",
            }.get(variant, variant)
            lines.append(
                f"| {level:,} | {label} | {fmt_rate(row['events_per_s'])} |"
                f" {fmt_ms(row['p50_ms'])} | {fmt_ms(row['p99_ms'])} |"
                f" {fmt_ratio(ratio(row['p50_ms'], base and base['p50_ms']))} |"
            )
    return "\n".join(lines)


def targets_table(rows):
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {target.name} | {target.measured} | {target.verdict()} |" for target in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plot

STYLES = {
    SERIALIZED: ("tab:blue", "o", "-"),
    BATCH_SERIALIZED: ("tab:blue", "o", "-"),
    SERIALIZED_QUIET: ("tab:cyan", "s", "--"),
    CONCURRENT: ("tab:green", "D", "-"),
    BATCH_CONCURRENT: ("tab:green", "D", "-"),
    LOCK: ("tab:red", "^", "-"),
    LOCK_QUIET: ("tab:orange", "^", "--"),
    UNORDERED: ("tab:gray", "v", ":"),
    CLAIM: ("tab:blue", "o", "-"),
    NAIVE: ("tab:red", "^", "-"),
    select_notifications("serialized"): ("tab:blue", "o", "-"),
    plain_select("serialized"): ("tab:gray", "v", ":"),
    select_notifications("concurrent"): ("tab:green", "D", "-"),
    plain_select("concurrent"): ("tab:olive", "v", ":"),
}


def plot_throughput(axis, results, group, title, xlabel):
    for variant in results.variants(group):
        data = results.rows(group, variant)
        color, marker, line = STYLES.get(variant, (None, "o", "-"))
        label = LABELS.get(variant, variant)
        if group == "follower" and variant == NAIVE:
            errors = sum(row["errors"] for row in data)
            label += f" ({errors:,} duplicate-key errors)"
        axis.plot(
            [row["clients"] for row in data],
            [row["events_per_s"] for row in data],
            marker=marker,
            linestyle=line,
            color=color,
            label=label,
        )
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    ticks = results.clients(group)
    axis.set_xticks(ticks)
    axis.set_xticklabels([str(tick) for tick in ticks])
    axis.set_title(title, fontsize=11)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("events/s (log)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")


def plot_wakeup(axis, results):
    rows = [results.one("wakeup", variant) for variant in results.variants("wakeup")]
    names = [row["variant"].replace(" (", "\n(") for row in rows]
    positions = range(len(rows))
    width = 0.38
    for offset, key, label, color in (
        (-width / 2, "wake_p50_ms", "p50", "tab:blue"),
        (width / 2, "wake_p99_ms", "p99", "tab:red"),
    ):
        values = [row[key] or 0 for row in rows]
        bars = axis.bar(
            [position + offset for position in positions], values, width, label=label, color=color
        )
        axis.bar_label(bars, labels=[fmt_ms(value) for value in values], fontsize=8)
    axis.set_xticks(list(positions))
    axis.set_xticklabels(names, fontsize=8)
    writers = rows[0]["writers"] if rows else "?"
    axis.set_title(f"Wake-up latency, {writers} writers to 1 application", fontsize=11)
    axis.set_ylabel("ms from the commit returning to the notification")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)


def plot(results, path):
    panels = [
        ("append1", "Single-event appends, 1 application", "clients"),
        ("append8", "Single-event appends, 8 applications", "clients"),
        ("batch10", "Batches of 10 events, 1 application", "clients"),
        ("batch100", "Batches of 100 events, 1 application", "clients"),
        ("wakeup", None, None),
        ("follower", "Follower loop, competing processes of 1 follower", "processes"),
        ("read", "1,000-row page reads", "clients"),
    ]
    panels = [panel for panel in panels if results.rows(panel[0])]
    columns = 2
    rows = max(1, (len(panels) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(14, 4.6 * rows), squeeze=False)
    for index, (group, title, xlabel) in enumerate(panels):
        axis = axes[index // columns][index % columns]
        if group == "wakeup":
            plot_wakeup(axis, results)
        else:
            plot_throughput(axis, results, group, title, xlabel)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    machine = results.meta["machine"]
    figure.suptitle(
        f"biomero_tracking benchmark, {results.meta.get('started', '')}: {machine['nproc']} cores,"
        f" {machine['memory']}, PostgreSQL {results.meta['settings'].get('server_version')}"
        " (absolute figures are for this run only; compare within a panel)",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------
# Markdown

SCRIPT_SETTINGS = (
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "shared_preload_libraries",
)


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
    add(
        "Reproduce (from a fresh clone, after `bash scripts/setup.sh`; as root, like the other"
        " scripts):"
    )
    add("")
    add("```sh")
    add(command)
    add("```")
    add("")
    add(
        "It builds the release package of the working tree (`cargo pgrx package`; `BENCH_REF=HEAD`"
        " builds a git revision instead), runs PostgreSQL from a private copy of the system's"
        " installation with that package in it (so a reinstall of the extension during the run"
        " changes nothing), starts its own throwaway cluster with the library in"
        " `shared_preload_libraries` (concurrent append mode needs it), prints the server"
        " settings, runs every scenario below in one run"
        f" (about {meta.get('elapsed_seconds', 0) / 60:.0f} minutes here), and rewrites this file"
        " and `docs/benchmarks.png` from the results (raw results: `bench/results/*.json`)."
        " `BENCH_QUICK=1 bash scripts/bench.sh` is a short smoke run that writes its report under"
        " `bench/results/` instead. It is not part of the tests."
    )
    add("")
    add(
        "**Claims are ratios between approaches measured in the same run.** The machine is a"
        " shared, noisy 2-core VM whose disk flush latency moves several-fold between runs, so the"
        " absolute events/s below are for this run only."
    )
    add("")

    current, earlier = targets(results)
    add("## Targets")
    add("")
    add("Concurrent appends (0.3.0):")
    add("")
    add(targets_table(current))
    add("")
    if earlier:
        add("Carried from earlier releases:")
        add("")
        add(targets_table(earlier))
        add("")

    add("## This run")
    add("")
    add(
        f"- Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} memory,"
        f" {machine['os']}, kernel {machine['kernel']}; the server, pgbench and the Python"
        " drivers share the cores."
    )
    add(
        f"- PostgreSQL {settings.get('server_version')}; {machine['pgbench']};"
        f" Python {machine['python']} with psycopg2 {machine['psycopg2']}."
    )
    add(
        f"- Library measured: {library.get('built', '?')}, commit {library.get('commit', '?')}"
        f" ({library.get('uncommitted_source_files', '?')} uncommitted source files),"
        f" sha256 {library.get('sha256', '?')}…, {library.get('bytes', 0) / 1e6:.1f} MB"
        + (
            f"; extension version {meta['extension_version']}, its SQL scripts from the same"
            " package."
            if meta.get("extension_version")
            else "."
        )
    )
    if meta.get("setup_sql"):
        add(f"- Changed before measuring: `{meta['setup_sql']}` was run in the benchmark database.")
    if meta.get("quick"):
        add(
            "- **Quick run** (`BENCH_QUICK=1`): short points and small stores; for checking the"
            " tooling, not for quoting."
        )
    add(
        f"- Run: {meta.get('started')} to {meta.get('finished')},"
        f" {meta.get('elapsed_seconds', 0) / 60:.1f} minutes; {seconds:g} s per point, split in"
        f" {meta['rounds']} rounds whose order alternates between the compared approaches."
    )
    add("")
    add("Server settings (PostgreSQL's defaults except the ones the script sets, marked *):")
    add("")
    add("| setting | value |")
    add("|---|---|")
    changed = meta.get("changed_settings", {})
    for name, value in settings.items():
        add(f"| {name} | {value}{' *' if name in SCRIPT_SETTINGS else ''} |")
    add("")
    others = {
        name: value
        for name, value in changed.items()
        if name not in settings
        and name not in ("listen_addresses", "port", "unix_socket_directories")
    }
    if others:
        add(
            "Other settings not at their built-in default (from initdb): "
            + ", ".join(f"`{name}={value}`" for name, value in sorted(others.items()))
            + "."
        )
        add("")

    add("## How each scenario is measured")
    add("")
    add(
        f"- Event: topic `{meta['topic']}`, a {meta['state_bytes']}-byte JSON state as bytea, a"
        " fresh `gen_random_uuid()` originator at version 0 (all approaches generate it"
        " server-side)."
    )
    add(
        "- Appends and reads: pgbench, `-M prepared`, one thread per client, per-transaction logs"
        " for p50/p99. Latency is the whole transaction as pgbench sees it. events/s ="
        " transactions/s × events per transaction."
    )
    add(
        "- record_event is one autocommitted statement, into application `app0` in serialized"
        " mode (the default: an append lock per application held to commit, gapless ids) or"
        " `conc0` in concurrent mode (`biomero.set_append_mode(…, 'concurrent')`: ids from a"
        " shared-memory counter, writers never wait for each other, readers held to the"
        " horizon, no NOTIFY from the writers: a background worker sends one per advance of the"
        " horizon)."
    )
    add(
        "- Baseline (a) is what eventsourcing 9.5's PostgreSQL recorder sends per append"
        " (`PostgresApplicationRecorder.insert_events`), on its table (bigserial"
        " `notification_id` with a unique index, primary key (originator_id,"
        " originator_version), its storage parameters): in one pipeline `BEGIN; SET LOCAL"
        " lock_timeout = '0s'; LOCK TABLE {app}_events IN EXCLUSIVE MODE; NOTIFY {app}_events;"
        " INSERT … SELECT … FROM unnest(<array of its composite type>) RETURNING"
        " notification_id`, a sync, then `COMMIT` (pgbench `\\startpipeline` … `\\endpipeline`)."
        " (a′) is the same without the NOTIFY, to show what the NOTIFY costs. Baseline (b) is the"
        " INSERT alone (`INSERT … VALUES … RETURNING notification_id`): no lock, no NOTIFY, no"
        " order for readers (a later id can commit first), the ceiling."
    )
    add(
        "- 8 applications: each client appends to application `client_id % 8` (a process per"
        " application, as in BIOMERO); for (a), (a′) and (b) that is 8 tables, as eventsourcing"
        " creates one per application. At 1 and 4 clients only 1 and 4 applications are busy."
    )
    add(
        "- `biomero.notify`: serialized record_event with the default (on: a NOTIFY per append)"
        " and with `PGOPTIONS='-c biomero.notify=off'`. PostgreSQL serializes the commits of all"
        " notifying transactions of the cluster, so this matters most with several"
        " applications."
    )
    add(
        "- Batches: one call/transaction of 10 or 100 events of one application;"
        " record_events receives arrays built server-side (`ARRAY(SELECT gen_random_uuid() …)`,"
        " `array_fill`), (a) an array of its composite type built from `generate_series(1, n)`,"
        " (b) `INSERT … SELECT … FROM generate_series(1, n)`."
    )
    wake = results.one("wakeup", WAKE_CONCURRENT) or {}
    add(
        f"- Wake-up latency: {wake.get('writers', 16)} writers append single events to one"
        f" application ({wake.get('writers', 16) - 1} pgbench clients and a probe) while"
        f" {wake.get('listeners', 4)} listeners (psycopg2 connections, `LISTEN biomero_events`,"
        " `select()`) record when each notification arrives. The probe (psycopg2, autocommit)"
        " records each id it appended and when its commit returned; a sample is the time from"
        " that moment to the arrival, at a listener, of the first notification whose `last`"
        " covers the id (negative: the listener heard before the writer's answer arrived). In"
        " serialized mode that is the writer's own NOTIFY, in concurrent mode the horizon"
        " publisher's. The two modes alternate by round; missed counts ids no notification"
        " covered within a second after the writers stopped."
    )
    add(
        "- Follower loop: Python (psycopg2, one process and connection per competing processor),"
        " one notification per transaction: biomero = `claim` → `select_notifications(start =>"
        " position, limit 1, inclusive_of_start => false)` → INSERT into a read-model table →"
        " `record_tracking` → COMMIT; naive = `SELECT max(notification_id)` from an"
        " eventsourcing 9.2/9.3 multi-row tracking table (primary key (application_name,"
        " notification_id)) → the next row of an eventsourcing events table → the same read-model"
        " INSERT → INSERT tracking → COMMIT, where a duplicate-key error is counted and rolled"
        " back. events/s counts committed notifications; latency is per committed transaction."
    )
    add(
        "- Reads: a random 1,000-row page of an application holding"
        f" {meta.get('read_events', 0):,} events, one in serialized and one in concurrent mode"
        " (switched after its events were loaded, then one append of its own; its pages are"
        " bounded by the horizon, which with nothing in flight is the head):"
        " `SELECT * FROM biomero.select_notifications(app, start, 1000)` against the plain"
        " `SELECT … FROM biomero.events WHERE application_name = … AND notification_id >= start"
        " ORDER BY notification_id LIMIT 1000` of the same application. events/s = rows/s."
    )
    add(
        "- Growth: events bulk-loaded with `INSERT … SELECT generate_series` straight into"
        " `biomero.events` (superuser; 10 events per random-uuid aggregate), then `VACUUM"
        " (ANALYZE)` and `CHECKPOINT`. At each size: serialized record_event at 1 client into the"
        " grown application, alternated with a control (unordered INSERT into a small, fresh"
        " table, which moves only with the machine), after a short unmeasured warm-up; then"
        " `ANALYZE` and random 1,000-row pages of the grown application, select_notifications"
        " alternated with the plain SELECT. Growth points run twice as long as the others. At 0"
        " the application holds only the events the append step itself wrote."
    )
    add("")

    add("## Results")
    add("")
    add(f"![throughput against clients]({png_name})")
    add("")

    def section(title, group, *parts):
        # A run limited with BENCH_ONLY has no rows for the other groups.
        if not results.rows(group):
            return
        add(f"### {title}")
        add("")
        for part in parts:
            add(part)
            add("")

    section(
        "Single-event appends, 1 application",
        "append1",
        scenario_table(results, "append1"),
        ratio_table(
            results,
            "append1",
            [
                (CONCURRENT, UNORDERED),
                (CONCURRENT, LOCK),
                (SERIALIZED, LOCK),
                (SERIALIZED, LOCK_QUIET),
                (SERIALIZED_QUIET, LOCK_QUIET),
                (LOCK, LOCK_QUIET),
            ],
        ),
    )
    section(
        "Single-event appends, 8 applications",
        "append8",
        scenario_table(results, "append8"),
        ratio_table(
            results,
            "append8",
            [
                (CONCURRENT, UNORDERED),
                (SERIALIZED, LOCK),
                (SERIALIZED_QUIET, LOCK_QUIET),
                (LOCK, LOCK_QUIET),
            ],
        ),
        scaling_table(results),
    )
    for size in (10, 100):
        section(
            f"Batches of {size} events per call, 1 application",
            f"batch{size}",
            scenario_table(results, f"batch{size}"),
            ratio_table(
                results,
                f"batch{size}",
                [(BATCH_CONCURRENT, UNORDERED), (BATCH_SERIALIZED, LOCK), (BATCH_CONCURRENT, LOCK)],
            ),
        )
    section("Wake-up latency", "wakeup", wakeup_table(results))
    section(
        "Follower loop, competing processes of one follower",
        "follower",
        scenario_table(
            results,
            "follower",
            first_column="processes",
            extra_columns=(
                ("errors", lambda row: f"{row['errors']:,}"),
                (
                    "errors / s",
                    lambda row: f"{row['errors'] / row['seconds']:,.0f}" if row["seconds"] else "–",
                ),
                ("processed twice", lambda row: row.get("duplicates", "–")),
                ("skipped", lambda row: row.get("skipped", "–")),
            ),
        ),
    )
    section("1,000-row pages", "read", scenario_table(results, "read"), read_ratio_table(results))
    loads = meta.get("load_seconds", {})
    section(
        "Growth",
        "growth",
        growth_table(results),
        "Bulk-load time: "
        + ", ".join(f"{int(level):,} events: {value:.0f} s" for level, value in loads.items())
        + ".",
    )
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
    current, earlier = targets(results)
    for target in current + earlier:
        verdict = {True: "MET     ", False: "MISSED  ", None: "REPORTED"}[target.met]
        print(f"{verdict} {target.name}: {target.measured}")


if __name__ == "__main__":
    main()
