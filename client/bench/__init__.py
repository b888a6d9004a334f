"""`ringlog bench`: side-by-side benchmarks of ringlog, Tansu and the machine's own limits.

Every broker is started by the harness itself (ringlog as a `ringlog broker` subprocess on a fresh
temporary data directory, once per fsync policy; Tansu with its in-memory storage engine) and driven
by one client harness (confluent-kafka, in separate processes) over loopback only. Every loop is
bounded both in count (bytes/records) and in time.

Modules:
  procstat   broker CPU seconds and peak RSS, sampled from /proc/<pid> while a workload runs
  machine    date, nproc, CPU model, memory: the facts quoted with the figures
  limits     raw sequential disk write (page cache, and with fdatasync), loopback TCP bandwidth
  brokers    launchers for ringlog and Tansu (ready detection, kill -9, recovery timing)
  workloads  the confluent-kafka client workloads (run in child processes)
  runner     the plan (full / quick) and the loop over systems x workloads x runs
  report     medians, ratios, goals (PASS/MISS), docs/performance.md and the PNG plots
"""
