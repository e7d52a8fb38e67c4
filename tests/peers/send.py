#!/usr/bin/env python3
"""Sends uniquely numbered messages with Python's smtplib, as a fleet of
programs on a docker host would, and records what each message was answered.

Usage: send.py HOST:PORT OUT FIRST COUNT [--sessions N] [--domains N]
               [--retry-for SECS] [--size BYTES]

Messages FIRST .. FIRST+COUNT-1 go from sender@origin.test to
r<SEQ>@d<SEQ % domains>.test, each with an `X-Seq: <SEQ>` header, over N
sessions at once (each session reuses its connection for many messages).
A message that is not answered 250 (connection refused or lost, 4xx) is
sent again after a pause, for up to --retry-for seconds: like msmtp run again
by a cron job, so a message is lost only if hedwig loses it. 5xx is final.

OUT gets one line per message once it ends: `SEQ CODE ATTEMPTS`, CODE being
the last reply code (0: no reply, e.g. connection refused until the end).
The last line of stdout counts them: `sent N answered-250 N`.
"""

import queue
import smtplib
import sys
import threading
import time


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    host, port = args[0].rsplit(":", 1)
    out_path, first, count = args[1], int(args[2]), int(args[3])
    opts = {"--sessions": "8", "--domains": "10", "--retry-for": "60", "--size": "600"}
    rest = args[4:]
    while rest:
        if rest[0] not in opts or len(rest) < 2:
            sys.exit("unknown or incomplete option " + rest[0])
        opts[rest[0]] = rest[1]
        rest = rest[2:]
    sessions, domains = int(opts["--sessions"]), int(opts["--domains"])
    retry_for, size = float(opts["--retry-for"]), int(opts["--size"])

    todo = queue.Queue()
    for seq in range(first, first + count):
        todo.put(seq)
    results, lock = [], threading.Lock()
    filler = ("x" * 70 + "\r\n") * max(0, size // 72)

    def message(seq):
        return (
            f"From: sender@origin.test\r\nTo: r{seq}@d{seq % domains}.test\r\n"
            f"Subject: fault message {seq}\r\nX-Seq: {seq}\r\n\r\nmessage {seq}\r\n{filler}"
        )

    def session():
        smtp = None
        while True:
            try:
                seq = todo.get_nowait()
            except queue.Empty:
                break
            deadline = time.monotonic() + retry_for
            attempts, code = 0, 0
            while True:
                attempts += 1
                try:
                    if smtp is None:
                        smtp = smtplib.SMTP(host, int(port), timeout=30)
                        smtp.ehlo("sender.test")
                    refused = smtp.sendmail(
                        "sender@origin.test", [f"r{seq}@d{seq % domains}.test"], message(seq)
                    )
                    code = 250 if not refused else 550
                except smtplib.SMTPResponseException as e:
                    code = e.smtp_code
                except smtplib.SMTPRecipientsRefused as e:
                    code = list(e.recipients.values())[0][0]
                except (smtplib.SMTPException, OSError):
                    code = 0
                if code != 250 and smtp is not None:
                    # Whatever went wrong, start the next attempt on a fresh
                    # connection: the old one may be half-way through DATA.
                    try:
                        smtp.close()
                    except Exception:
                        pass
                    smtp = None
                if code == 250 or 500 <= code < 600 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            with lock:
                results.append((seq, code, attempts))
        if smtp is not None:
            try:
                smtp.quit()
            except Exception:
                pass

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort()
    with open(out_path, "w") as f:
        for seq, code, attempts in results:
            f.write(f"{seq} {code} {attempts}\n")
    ok = sum(1 for _, code, _ in results if code == 250)
    print(f"sent {len(results)} answered-250 {ok}")


main()
