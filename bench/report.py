"""The machine description and the printed tables of a benchmark run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def machine_description() -> dict[str, Any]:
    """Return the CPU model, core count and memory, read from /proc."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1)}


def ack_rows(results: list[dict[str, Any]]) -> list[str]:
    """Format one row per kind and level: secretbot's figures and their ratio to the baseline's."""
    baseline = {(item["kind"], item["concurrency"]): item for item in results if item["target"] == "bolt"}
    rows = ["kind     clients  target     p50 ms  p95 ms  p99 ms  max ms    req/s  errors  p99/bolt"]
    for item in results:
        base = baseline[(item["kind"], item["concurrency"])]
        ratio = f"{item['p99_ms'] / base['p99_ms']:.2f}" if item["target"] == "secretbot" else ""
        rows.append(f"{item['kind']:<8} {item['concurrency']:>7}  {item['target']:<9} {item['p50_ms']:>7.1f} "
                    f"{item['p95_ms']:>7.1f} {item['p99_ms']:>7.1f} {item['max_ms']:>7.1f} "
                    f"{item['requests_per_second']:>8.0f} {item['errors']:>7}  {ratio:>8}")
    return rows


def print_results(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(f"\n{results['date']}  {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
          f"Python {results['python']}")

    print(f"\nAcknowledgement latency, secretbot on {results['database']} (bolt = bare slack-bolt AsyncApp baseline)")
    for row in ack_rows(results["ack"]):
        print(row)
    print(f"ended runs (the latency test's and the footprint test's): {results.get('runs_completed')}")

    startup = results["startup"]
    print("\nFootprint")
    print(f"idle RSS: {results['idle_rss_mb']} MB (baseline {results['baseline_idle_rss_mb']} MB); "
          f"after a restart on the migrated database: {results.get('idle_rss_after_restart_mb', '-')} MB; "
          f"after {sum(results['runs_completed'].values())} runs: {results['rss_after_runs_mb']} MB")
    print(f"start to healthy: first start {startup['first_start_s']} s, restart median {startup['restart_median_s']} s "
          f"(max {startup['restart_max_s']} s)")

    print("\nBatching (one command, one approval)")
    for batch in results["batching"]:
        print(f"N={batch['secrets']:>2}: {batch['outcome']}, import calls {batch['import_calls']}, changing calls "
              f"{batch['changing_calls']}, new releases {batch['new_releases']}, all calls {batch['all_calls']}, "
              f"{batch['run_seconds']} s")

    print("\nScale")
    for point in results["scale"]:
        print(f"{point['apps']} apps, {point['secrets']} secrets: first sync {point['first_sync_s']} s, second sync "
              f"{point['second_sync_s']} s (failed apps {point['sync_failed_apps']}), reminder {point['reminder_ms']} ms "
              f"({point['reminder_items']} listed)")
        for query in point["queries"]:
            print(f"    {query['audit_records']} audit records: status {query['status_ms']} ms "
                  f"({query.get('status_after_change_ms', '-')} ms after a change), history {query['history_ms']} ms")
