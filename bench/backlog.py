#!/usr/bin/env python3
"""The backlog benchmark: what a large queue costs postoffice and mailman,
and how fast it drains. The measuring half of `scripts/bench --backlog N`;
run that rather than this file.

postoffice (--side postoffice):
  1. postoffice starts with every destination refusing connections (its
     one route, "*", points at a port where nothing listens yet) and a
     first retry an hour away. N messages of SIZE bytes are posted to its
     API (SESSIONS clients with keep-alive, recipients spread over DOMAINS
     domains); each is tried once and deferred. Figure: the fill rate.
  2. postoffice is stopped (SIGTERM) and started again on that queue.
     Figures: time to serve (spawn to the first 200 from /healthz), time
     until its start scan has read the whole queue (its log line "scan
     done"), and RSS and threads then ("after start").
  3. The destination comes up (a fresh smtp-sink), POST /v1/queue/flush.
     Sampled every 50 ms until the sink has all N: RSS and threads.
     Figures: drain rate (N over flush to last arrival), peak RSS (VmHWM of
     the restarted process), most threads, and whether anything was lost
     (the sink's count against N, the queue directory empty).

mailman (--side mailman): the same with mailman's spool. postoffice is
  down while smtp-source sends N messages to mailman (SESSIONS sessions);
  mailman is restarted (time to its first 220 greeting; after start: when
  its forwarder has listed the spool, log line "resuming"); then
  postoffice (fresh queue, routing "*" to the sink) comes up and the spool
  drains through it to the sink. Figures as above, for mailman.

Targets (issue 10), for both: RSS <= 64 MiB after start, <= 128 MiB peak
while draining, <= 64 threads, serving within 1 s, drain >= 1000 msg/s,
nothing lost.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import bench
from bench import Procs, Sampler, Sink, fatal, log, status_kb, wait_port

POSTOFFICE_PORT = 8025
MAILMAN_PORT = 2525
TOKEN = "bench-token"
TARGETS = {"rss_after_start_mib": 64, "rss_peak_mib": 128, "threads_max": 64,
           "serve_s": 1.0, "drain_rate": 1000}


def message(i, size, domains):
    head = (f"From: <bench@source.test>\r\nTo: <r{i}@d{i % domains}.bench>\r\n"
            f"Subject: backlog {i}\r\nMessage-Id: <backlog-{i}@source.test>\r\n\r\n").encode()
    line = b"X" * 78 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def request(addr, method, path, body=None, timeout=60):
    c = http.client.HTTPConnection(addr, POSTOFFICE_PORT, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def post_all(addr, n, size, domains, sessions):
    """Posts n messages over `sessions` keep-alive connections; returns seconds."""
    nxt, lock, failed = [0], threading.Lock(), []

    def worker():
        c = None
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                break
            body = message(i, size, domains)
            path = f"/v1/messages?from=bench%40source.test&to=r{i}%40d{i % domains}.bench"
            for attempt in range(20):
                try:
                    if c is None:
                        c = http.client.HTTPConnection(addr, POSTOFFICE_PORT, timeout=60)
                    c.request("POST", path, body=body, headers={
                        "Authorization": f"Bearer {TOKEN}", "Content-Type": "message/rfc822",
                        "Idempotency-Key": f"backlog-{i}"})
                    r = c.getresponse()
                    r.read()
                    if r.status == 202:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                if c is not None:
                    c.close()
                    c = None
                time.sleep(0.1)
            else:
                failed.append(i)
        if c is not None:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        fatal(f"{len(failed)} messages were not accepted")
    return time.monotonic() - t0


def queue_counts(addr):
    status, body = request(addr, "GET", "/v1/queue?limit=1")
    return json.loads(body) if status == 200 else {}


def log_has(path, pattern):
    try:
        with open(path, "rb") as f:
            return re.search(pattern.encode(), f.read()) is not None
    except OSError:
        return False


def threads_of(pid):
    return status_kb(pid, "Threads:")


def files_in(path):
    return len(os.listdir(path)) if os.path.isdir(path) else 0


def wait_for(what, cond, timeout, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(poll)
    fatal(f"timed out after {timeout:.0f}s waiting for {what}")


def stop(procs, p):
    procs.stop(p, sig=signal.SIGTERM, timeout=60)


class Run:
    """One side's figures, printed and kept for --json."""

    def __init__(self, side, n):
        self.figures = {"side": side, "count": n}

    def set(self, key, value, text):
        self.figures[key] = value
        log(f"  {text}")


def drained(r, sink, sampler, pid, n, t0, directory):
    """Waits until the sink has all n (drain from t0); records the drain
    rate, the process's peak RSS and threads, and what was lost or doubled
    once `directory` (its queue or spool) is empty."""
    t_end = sink.wait_for(n, max(300, n / 50))
    peaks = sampler.finish()
    if t_end is None:
        fatal(f"the sink has {sink.count()} of {n}")
    rate = n / (t_end - t0)
    r.set("drain_rate", rate, f"drained {n} in {t_end - t0:.1f}s: {rate:.0f} msg/s")
    hwm = status_kb(pid, "VmHWM:") / 1024
    r.set("rss_peak_mib", hwm, f"peak RSS (VmHWM) {hwm:.1f} MiB, sampled peak {peaks['rss'] / 1024:.1f} MiB")
    r.set("threads_max", peaks["threads"], f"threads: at most {peaks['threads']}")
    wait_for(f"{directory} to empty", lambda: files_in(directory) == 0, 30)
    time.sleep(3)  # late duplicates
    got = sink.count()
    r.set("lost", max(0, n - got), f"sink has {got} of {n}; {directory} empty")
    r.set("duplicated", max(0, got - n), f"duplicates: {max(0, got - n)}")


def postoffice_config(work, addrs, name, queue, retry_first):
    path = os.path.join(work, f"{name}.ron")
    with open(path, "w") as f:
        f.write(f"""(postoffice: (
    listen: "{addrs['postoffice']}:{POSTOFFICE_PORT}",
    tokens: ["{TOKEN}"],
    hostname: "postoffice.bench",
    queue: "{queue}",
    delivery: (
        starttls: Never,
        retry: (first: "{retry_first}", max: "{retry_first}", give_up: "5d"),
        routes: {{"*": "{addrs['sink']}:{bench.SINK_PORT}"}},
    ),
))
""")
    return path


def start_postoffice(procs, bins, config, addrs, name):
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    t0 = time.monotonic()
    p = procs.spawn(name, [bins["postoffice"], "--config", config], env=env)

    def serving():
        try:
            return request(addrs["postoffice"], "GET", "/healthz", timeout=1)[0] == 200
        except OSError:
            return False
    t1 = wait_for("postoffice to serve", serving, 60, poll=0.005)
    return p, t1 - t0


def side_postoffice(args, procs, work, addrs, bins):
    n = args.count
    log(f"backlog postoffice: {n} messages of {args.size} bytes to {args.domains} domains")
    r = Run("postoffice", n)
    queue = os.path.join(work, "po-backlog", "queue")
    config = postoffice_config(work, addrs, "po-backlog", queue, "1h")
    po, _ = start_postoffice(procs, bins, config, addrs, "postoffice-fill")
    took = post_all(addrs["postoffice"], n, args.size, args.domains, args.sessions)
    r.set("fill_rate", n / took, f"filled: {n} accepted in {took:.1f}s ({n / took:.0f} msg/s)")
    wait_for("every message deferred once",
             lambda: queue_counts(addrs["postoffice"]).get("by_state", {}).get("deferred", 0) >= n,
             max(120, n / 200), poll=0.5)
    stop(procs, po)

    po, serve = start_postoffice(procs, bins, config, addrs, "postoffice")
    t_start = time.monotonic() - serve
    r.set("serve_s", serve, f"restarted: serving after {serve * 1000:.0f} ms")
    logfile = os.path.join(work, "logs", "postoffice.log")
    sampler = Sampler({"threads": lambda: threads_of(po.pid),
                       "rss": lambda: status_kb(po.pid, "VmRSS:")})
    sampler.start()
    t_scan = wait_for("postoffice's start scan", lambda: log_has(logfile, r"scan done"), max(300, n / 100))
    r.set("scan_s", t_scan - t_start, f"start scan done after {t_scan - t_start:.1f}s")
    rss = status_kb(po.pid, "VmRSS:") / 1024
    r.set("rss_after_start_mib", rss, f"after start: RSS {rss:.1f} MiB, {threads_of(po.pid)} threads")

    sink = Sink(procs, work, addrs["sink"], "backlog-po")
    t_flush = time.monotonic()
    status, body = request(addrs["postoffice"], "POST", "/v1/queue/flush")
    if status != 202:
        fatal(f"flush answered {status}: {body!r}")
    drained(r, sink, sampler, po.pid, n, t_flush, os.path.join(queue, "queue"))
    stop(procs, po)
    sink.stop()
    return r.figures


def greeting(addr, port):
    try:
        with socket.create_connection((addr, port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(64).startswith(b"220 ")
    except OSError:
        return False


def mailman_config(work, addrs, spool):
    path = os.path.join(work, "mm-backlog.ron")
    with open(path, "w") as f:
        f.write(f"""(mailman: (
    listen: ["{addrs['mailman']}:{MAILMAN_PORT}"],
    hostname: "mailman.bench",
    allow: ["127.0.0.0/8"],
    spool: "{spool}",
    postoffice: (url: "http://{addrs['postoffice']}:{POSTOFFICE_PORT}", token: "{TOKEN}",
                 retry: (first: "1s", max: "2s")),
))
""")
    return path


def side_mailman(args, procs, work, addrs, bins):
    n = args.count
    log(f"backlog mailman: {n} messages of {args.size} bytes, postoffice down")
    r = Run("mailman", n)
    spool = os.path.join(work, "mm-backlog", "spool")
    config = mailman_config(work, addrs, spool)
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    mm = procs.spawn("mailman-fill", [bins["mailman"], "--config", config], env=env)
    wait_for("mailman to greet", lambda: greeting(addrs["mailman"], MAILMAN_PORT), 30)
    took = bench.smtp_source(addrs["mailman"], MAILMAN_PORT, n, args.size, args.sessions,
                             os.path.join(work, "logs", "smtp-source.log"))
    if took is None:
        fatal("smtp-source failed (logs/smtp-source.log)")
    r.set("fill_rate", n / took, f"filled: {n} accepted in {took:.1f}s ({n / took:.0f} msg/s)")
    stop(procs, mm)
    spooled = files_in(os.path.join(spool, "queue"))
    if spooled != n:
        fatal(f"{spooled} messages spooled, not {n}")

    t0 = time.monotonic()
    mm = procs.spawn("mailman", [bins["mailman"], "--config", config], env=env)
    t1 = wait_for("mailman to greet", lambda: greeting(addrs["mailman"], MAILMAN_PORT), 60, poll=0.005)
    r.set("serve_s", t1 - t0, f"restarted: greeting after {(t1 - t0) * 1000:.0f} ms")
    logfile = os.path.join(work, "logs", "mailman.log")
    sampler = Sampler({"threads": lambda: threads_of(mm.pid),
                       "rss": lambda: status_kb(mm.pid, "VmRSS:")})
    sampler.start()
    t_list = wait_for("mailman's spool listing", lambda: log_has(logfile, r"resuming \d+ spooled"), 300)
    r.set("scan_s", t_list - t0, f"spool listed after {t_list - t0:.1f}s")
    rss = status_kb(mm.pid, "VmRSS:") / 1024
    r.set("rss_after_start_mib", rss, f"after start: RSS {rss:.1f} MiB, {threads_of(mm.pid)} threads")

    sink = Sink(procs, work, addrs["sink"], "backlog-mm")
    queue = os.path.join(work, "mm-backlog", "po-queue")
    po_config = postoffice_config(work, addrs, "mm-backlog-po", queue, "1s")
    t_up = time.monotonic()
    po, _ = start_postoffice(procs, bins, po_config, addrs, "postoffice-for-mailman")
    drained(r, sink, sampler, mm.pid, n, t_up, os.path.join(spool, "queue"))
    stop(procs, mm)
    stop(procs, po)
    sink.stop()
    return r.figures


def verdict(figures):
    """The targets each side met or missed."""
    out, ok = [], True
    checks = [("rss_after_start_mib", "RSS after start", "<=", "MiB"),
              ("rss_peak_mib", "peak RSS while draining", "<=", "MiB"),
              ("threads_max", "threads", "<=", ""),
              ("serve_s", "serving after", "<=", "s"),
              ("drain_rate", "drain rate", ">=", "msg/s")]
    for key, label, op, unit in checks:
        v, t = figures[key], TARGETS[key]
        met = v <= t if op == "<=" else v >= t
        ok &= met
        out.append(f"| {figures['side']} | {label} | {v:.2f} {unit} | {op} {t} {unit} | {'met' if met else 'MISSED'} |")
    lost_ok = figures["lost"] == 0
    ok &= lost_ok
    out.append(f"| {figures['side']} | lost | {figures['lost']} | 0 | {'met' if lost_ok else 'MISSED'} |")
    return out, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--side", choices=["postoffice", "mailman", "both"], default="both")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--net", default="127.55.0")
    ap.add_argument("--json")
    args = ap.parse_args()
    addrs = {"sink": f"{args.net}.1", "mailman": f"{args.net}.3", "postoffice": f"{args.net}.4"}
    work = args.work
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    bins = {b: os.path.join(args.bin_dir, b) for b in ("mailman", "postoffice")}
    procs = Procs(work)

    def on_signal(signum, _frame):
        raise SystemExit(f"backlog: interrupted by signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"backlog: {bench.machine()}; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    results = []
    try:
        if args.side in ("postoffice", "both"):
            results.append(side_postoffice(args, procs, work, addrs, bins))
        if args.side in ("mailman", "both"):
            results.append(side_mailman(args, procs, work, addrs, bins))
    finally:
        procs.stop_all()
    log("")
    log(f"Backlog of {args.count} messages of {args.size} bytes; {bench.machine()}")
    log(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    log("")
    log("| side | figure | value | target | |")
    log("|---|---|---:|---|---|")
    all_ok = True
    for figures in results:
        lines, ok = verdict(figures)
        all_ok &= ok
        for line in lines:
            log(line)
    for figures in results:
        log(f"{figures['side']}: fill {figures['fill_rate']:.0f} msg/s, start scan {figures['scan_s']:.1f}s, "
            f"duplicates {figures['duplicated']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": bench.machine(), "targets": TARGETS,
                       "results": results}, f, indent=1)
        log(f"backlog: wrote {args.json}")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
