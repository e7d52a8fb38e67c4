#!/usr/bin/python3
"""Verifies the DKIM signatures of the message on stdin with dkimpy (Debian's
python3-dkim; python3-nacl for Ed25519), the verifier hedwig's tests trust
instead of hedwig's own code. Prints "ok" when every check passed.

Usage: dkim_verify.py --expect N [--refold] NAME=RECORD...
  NAME=RECORD   the TXT record at NAME, e.g.
                s1._domainkey.example.org='v=DKIM1; k=ed25519; p=...'
                (these stand in for DNS: dkimpy asks for nothing else)
  --expect N    the message must carry N DKIM-Signature fields, all valid
                (0: none at all)
  --refold      verify also a copy whose header section was re-folded the
                way another MTA may do it: every space a fold (CRLF TAB)
Each signature must also fail once the Subject or the body is changed, so
a verifier that passes everything would be caught.
"""
import re
import sys

import dkim

args = sys.argv[1:]
records, expect, refold = {}, None, False
i = 0
while i < len(args):
    if args[i] == "--expect":
        expect = int(args[i + 1])
        i += 2
    elif args[i] == "--refold":
        refold = True
        i += 1
    else:
        name, record = args[i].split("=", 1)
        records[name.lower().rstrip(".")] = record
        i += 1
if expect is None:
    sys.exit(__doc__)
message = sys.stdin.buffer.read()


def dns(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    record = records.get(name.lower().rstrip("."))
    return record.encode() if record else None


def signatures(m):
    return len(re.findall(rb"^DKIM-Signature:", m, re.M | re.I))


def verify_all(m, label):
    n = signatures(m)
    if n != expect:
        sys.exit(f"{label}: {n} DKIM-Signature fields, expected {expect}")
    for idx in range(n):
        d = dkim.DKIM(m, minkey=1024)
        if not d.verify(idx=idx, dnsfunc=dns):
            sys.exit(f"{label}: signature {idx} does not verify")


def first_verifies(m):
    try:
        return dkim.DKIM(m).verify(idx=0, dnsfunc=dns)
    except dkim.DKIMException:
        return False


def refolded(m):
    head, sep, body = m.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            out.append(line)
            continue
        name, colon, value = line.partition(b":")
        out.append(name + colon + value.replace(b" ", b"\r\n\t"))
    return b"\r\n".join(out) + sep + body


verify_all(message, "as received")
if refold:
    verify_all(refolded(message), "re-folded")
if expect:
    changed = re.sub(rb"(?mi)^Subject:", b"Subject: changed", message, count=1)
    if changed != message and first_verifies(changed):
        sys.exit("a changed Subject still verifies")
    head, sep, body = message.partition(b"\r\n\r\n")
    tampered = head + sep + b"tampered\r\n" + body
    if first_verifies(tampered):
        sys.exit("a changed body still verifies")
    added = b"From: forger@evil.test\r\n" + message
    if first_verifies(added):
        sys.exit("an added From: still verifies")
print("ok")
