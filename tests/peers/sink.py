#!/usr/bin/env python3
"""A small SMTP sink for tests and the local quick start: it stores every
message it accepts as DIR/<n>.eml, with the envelope in DIR/<n>.env (JSON).

Usage: sink.py HOST:PORT DIR [--rcpt CODE:ADDR ...] [--rcpt-text TEXT] [--after N] [--stall]
               [--refuse-for SECS CODE] [--tls CERT KEY] [--no-smtputf8] [--max-sessions N]
  --rcpt CODE:ADDR   answer RCPT TO:<ADDR> with CODE (e.g. 550:bad@x.test);
                     an ADDR of @DOMAIN covers the whole domain
  --after N          apply --rcpt answers only to the first N transactions
  --stall            accept connections and never greet (for timeout tests)
  --refuse-for SECS CODE
                     for the first SECS seconds after start, answer 421 as the
                     greeting (CODE 421) or CODE to every RCPT (e.g. 450)
  --rcpt-text TEXT   what follows the code and status of a refused RCPT
                     (default "<ADDR>: refused by sink"); "|" separates the
                     lines of a multi-line reply
  --tls CERT KEY     offer STARTTLS with this certificate and key (PEM)
  --no-smtputf8      do not offer SMTPUTF8
  --max-sessions N   greet a session beyond N at once with
                     "421 4.7.0 Too many concurrent SMTP connections", as
                     throttling providers do; sessions.log records, per
                     session, how many were open when it arrived
The .env file records from, to and whether the session used TLS.

Standard library only, so it runs wherever python3 does. One thread per
connection; lines are bounded; it speaks just enough ESMTP (EHLO, PIPELINING,
8BITMIME, SMTPUTF8, SIZE) for hedwig's client.
"""
import json, os, socket, socketserver, ssl, sys, threading, time

args = sys.argv[1:]
if len(args) < 2:
    sys.exit(__doc__)
host, port = args[0].rsplit(":", 1)
out_dir = args[1]
rcpt_codes, stall, after, tls = {}, False, None, None
rcpt_text, smtputf8, max_sessions = None, True, None
refuse_until, refuse_code = 0.0, None
i = 2
while i < len(args):
    if args[i] == "--rcpt":
        code, addr = args[i + 1].split(":", 1)
        rcpt_codes[addr.lower()] = int(code)
        i += 2
    elif args[i] == "--rcpt-text":
        rcpt_text = args[i + 1]
        i += 2
    elif args[i] == "--no-smtputf8":
        smtputf8 = False
        i += 1
    elif args[i] == "--max-sessions":
        max_sessions = int(args[i + 1])
        i += 2
    elif args[i] == "--after":
        after = int(args[i + 1])
        i += 2
    elif args[i] == "--refuse-for":
        refuse_until = time.monotonic() + float(args[i + 1])
        refuse_code = int(args[i + 2])
        i += 3
    elif args[i] == "--stall":
        stall = True
        i += 1
    elif args[i] == "--tls":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args[i + 1], args[i + 2])
        i += 3
    else:
        sys.exit("unknown argument " + args[i])
os.makedirs(out_dir, exist_ok=True)
lock = threading.Lock()
counter = [0]
transactions = [0]
sessions = [0]


class Handler(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def readline(self):
        line = self.rfile.readline(65536)
        if not line:
            raise EOFError
        return line

    def handle(self):
        with lock:
            sessions[0] += 1
            open_now = sessions[0]
            with open(os.path.join(out_dir, "sessions.log"), "a") as f:
                f.write(f"{open_now}\n")
        try:
            if max_sessions is not None and open_now > max_sessions:
                self.reply("421 4.7.0 Too many concurrent SMTP connections from this IP; try again later")
                return
            self.session()
        finally:
            with lock:
                sessions[0] -= 1

    def session(self):
        if stall:
            self.request.recv(1)  # wait until the client gives up
            return
        if time.monotonic() < refuse_until and refuse_code == 421:
            self.reply("421 4.3.2 sink.test not accepting mail yet")
            return
        self.reply("220 sink.test ESMTP sink")
        mail_from, rcpts, secure = None, [], False
        try:
            while True:
                line = self.readline().rstrip(b"\r\n").decode("utf-8", "replace")
                verb = line[:4].upper()
                if verb == "EHLO":
                    starttls = b"250-STARTTLS\r\n" if tls and not secure else b""
                    self.wfile.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                     + starttls + (b"250-SMTPUTF8\r\n" if smtputf8 else b"")
                                     + b"250 SIZE 104857600\r\n")
                elif verb == "STAR" and tls and not secure:
                    self.reply("220 2.0.0 ready to start TLS")
                    self.request = tls.wrap_socket(self.request, server_side=True)
                    self.rfile = self.request.makefile("rb")
                    self.wfile = self.request.makefile("wb", buffering=0)
                    secure, mail_from, rcpts = True, None, []
                elif verb == "HELO":
                    self.reply("250 sink.test")
                elif verb == "MAIL":
                    mail_from, rcpts = line.split(":", 1)[1].split(">")[0].strip(" <"), []
                    self.reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    addr = line.split(":", 1)[1].split(">")[0].strip(" <")
                    code = 250
                    if time.monotonic() < refuse_until and refuse_code != 421:
                        code = refuse_code
                    with lock:
                        if after is None or transactions[0] < after:
                            domain = "@" + addr.rsplit("@", 1)[-1].lower()
                            code = rcpt_codes.get(addr.lower(), rcpt_codes.get(domain, code))
                    if code == 250:
                        rcpts.append(addr)
                        self.reply("250 2.1.5 ok")
                    else:
                        status = "4.2.0" if code < 500 else "5.1.1"
                        lines = (rcpt_text or f"<{addr}>: refused by sink").split("|")
                        for line in lines[:-1]:
                            self.reply(f"{code}-{status} {line}")
                        self.reply(f"{code} {status} {lines[-1]}")
                elif verb == "DATA":
                    if not rcpts:
                        self.reply("554 5.5.1 no valid recipients")
                        continue
                    self.reply("354 go ahead")
                    data = bytearray()
                    while True:
                        l = self.readline()
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                    with lock:
                        counter[0] += 1
                        transactions[0] += 1
                        n = counter[0]
                    base = os.path.join(out_dir, f"{n:06d}")
                    with open(base + ".eml.tmp", "wb") as f:
                        f.write(bytes(data))
                    with open(base + ".env", "w") as f:
                        json.dump({"from": mail_from, "to": rcpts, "tls": secure}, f)
                    os.rename(base + ".eml.tmp", base + ".eml")
                    self.reply(f"250 2.0.0 ok {n}")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    self.reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    with lock, open(os.path.join(out_dir, "quits.log"), "a") as f:
                        f.write(f"{transactions[0]}\n")
                    self.reply("221 2.0.0 bye")
                    return
                elif verb == "NOOP":
                    self.reply("250 2.0.0 ok")
                else:
                    self.reply("502 5.5.2 not implemented")
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows under a burst of
    # connections: the kernel then drops the handshake's last ACK and the
    # client waits for a greeting that never comes.
    request_queue_size = 256
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in host else socket.AF_INET


Server((host.strip("[]"), int(port)), Handler).serve_forever()
