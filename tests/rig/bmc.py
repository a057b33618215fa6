#!/usr/bin/env python3
"""The lab's BMC: a stand-in for the baseboard management controller a real host has and the
lab cannot. A small Redfish service (DMTF DSP0266) for ONE computer system, on 127.0.0.1:

  GET  /redfish/v1                      service root (no authentication, as Redfish says)
  GET  /redfish/v1/Systems              the systems collection
  GET  /redfish/v1/Systems/ID           the system: PowerState, Actions.#ComputerSystem.Reset
  POST /redfish/v1/Systems/ID/Actions/ComputerSystem.Reset   {"ResetType": ...}

Reset types: ForceOff, GracefulShutdown (the same here: there is no guest OS to ask), On,
ForceRestart (off, then on). Power really goes: ForceOff runs --off-cmd (the lab passes
`tests/rig/lab kill-host N`; T1 tests a command that moves the libvirt test driver's node file
away), On runs --on-cmd. PowerState is PoweringOff/PoweringOn while that command runs, then
what --state-cmd says (exit 0: On, else Off) or, without it, the outcome of the last command.

HTTP basic authentication with --user and the password in --password-file; 401 otherwise.
Python 3 standard library only. Nothing the client sends is logged but method, path and status.

  bmc.py --listen 127.0.0.1:0 --port-file F --system 1 --user U --password-file P \\
         --off-cmd CMD --on-cmd CMD [--state-cmd CMD] [--tls-cert PEM --tls-key PEM] [--pid-file F]
"""

import argparse
import base64
import hmac
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "ForceRestart"]
MAX_BODY = 64 * 1024


class Machine:
    """The one system's power, driven by shell commands."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.busy = None  # "PoweringOff" / "PoweringOn" while a command runs
        self.last = "On"  # the outcome of the last command, without --state-cmd

    def state(self):
        with self.lock:
            if self.busy:
                return self.busy
        if self.args.state_cmd:
            done = subprocess.run(self.args.state_cmd, shell=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=20)
            return "On" if done.returncode == 0 else "Off"
        with self.lock:
            return self.last

    def reset(self, kind):
        """Starts a reset; returns an error text, or None when it was accepted."""
        state = self.state()
        if state in ("PoweringOff", "PoweringOn"):
            return "a power change is still running"
        steps = {
            "ForceOff": ["off"],
            "GracefulShutdown": ["off"],
            "On": ["on"],
            "ForceRestart": ["off", "on"],
        }[kind]
        # Nothing to do (as real BMCs: accepted, no change).
        if steps == ["off"] and state == "Off" or steps == ["on"] and state == "On":
            return None
        if steps == ["off", "on"] and state == "Off":
            steps = ["on"]
        with self.lock:
            self.busy = "PoweringOff" if steps[0] == "off" else "PoweringOn"
        threading.Thread(target=self._run, args=(steps,), daemon=True).start()
        return None

    def _run(self, steps):
        for step in steps:
            with self.lock:
                self.busy = "PoweringOff" if step == "off" else "PoweringOn"
            cmd = self.args.off_cmd if step == "off" else self.args.on_cmd
            done = subprocess.run(cmd, shell=True, stdout=sys.stderr, stderr=sys.stderr)
            log(f"{step}: `{cmd}` exited {done.returncode}")
            with self.lock:
                if done.returncode == 0:
                    self.last = "Off" if step == "off" else "On"
                if done.returncode != 0:
                    break
        with self.lock:
            self.busy = None


def log(text):
    print(f"[bmc] {text}", file=sys.stderr, flush=True)


def error_body(code, message):
    return {"error": {"code": f"Base.1.8.{code}", "message": message,
                      "@Message.ExtendedInfo": [{"MessageId": f"Base.1.8.{code}",
                                                 "Message": message}]}}


class Handler(BaseHTTPRequestHandler):
    server_version = "FlotillaLabBMC/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # method, path, status only (never headers)
        log(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")

    def reply(self, status, body, extra=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("OData-Version", "4.0")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        cfg = self.server.cfg
        header = self.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
                ok = hmac.compare_digest(user, cfg.user) and hmac.compare_digest(password, cfg.password)
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            self.reply(401, error_body("InsufficientPrivilege", "Authentication is required"),
                       {"WWW-Authenticate": 'Basic realm="flotilla-lab-bmc"'})
        return ok

    def system_path(self):
        return f"/redfish/v1/Systems/{self.server.cfg.system}"

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        cfg = self.server.cfg
        if path in ("/redfish", ""):
            return self.reply(200, {"v1": "/redfish/v1/"})
        if path == "/redfish/v1":
            return self.reply(200, {
                "@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
                "Id": "RootService", "Name": "Flotilla lab BMC (stand-in)", "RedfishVersion": "1.8.0",
                "Systems": {"@odata.id": "/redfish/v1/Systems"}})
        if not self.authorized():
            return None
        if path == "/redfish/v1/Systems":
            return self.reply(200, {
                "@odata.id": "/redfish/v1/Systems",
                "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                "Name": "Computer System Collection", "Members@odata.count": 1,
                "Members": [{"@odata.id": self.system_path()}]})
        if path == self.system_path():
            return self.reply(200, {
                "@odata.id": self.system_path(),
                "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
                "Id": cfg.system, "Name": cfg.name, "SystemType": "Physical",
                "PowerState": self.server.machine.state(),
                "Actions": {"#ComputerSystem.Reset": {
                    "target": f"{self.system_path()}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": RESET_TYPES}}})
        return self.reply(404, error_body("ResourceMissingAtURI", f"The resource at {path} does not exist"))

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self.reply(413, error_body("GeneralError", "request too large"))
        raw = self.rfile.read(length) if length > 0 else b""
        if not self.authorized():
            return None
        if path != f"{self.system_path()}/Actions/ComputerSystem.Reset":
            return self.reply(404, error_body("ResourceMissingAtURI", f"The resource at {path} does not exist"))
        try:
            kind = json.loads(raw or b"{}").get("ResetType")
        except (ValueError, AttributeError):
            return self.reply(400, error_body("MalformedJSON", "The request body is not JSON"))
        if kind not in RESET_TYPES:
            return self.reply(400, error_body("ActionParameterValueNotInList",
                                              f"ResetType must be one of {', '.join(RESET_TYPES)}"))
        problem = self.server.machine.reset(kind)
        if problem:
            return self.reply(409, error_body("GeneralError", problem))
        log(f"reset {kind} accepted")
        return self.reply(204, None)

    def do_PUT(self):
        self.reply(405, error_body("OperationNotAllowed", "not allowed"))

    do_PATCH = do_PUT
    do_DELETE = do_PUT


def main():
    # A daemon keeps no descriptor it was started with: one could be a lock its starter holds
    # (a test run under flock), which would then stay held for as long as the stand-in runs.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (loopback only)")
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--pid-file")
    p.add_argument("--system", default="1", help="the system's Id")
    p.add_argument("--name", default="Flotilla lab host", help="the system's Name")
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--off-cmd", required=True, help="shell command that cuts the host's power")
    p.add_argument("--on-cmd", required=True, help="shell command that powers the host on")
    p.add_argument("--state-cmd", help="shell command: exit 0 while the host has power")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()

    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        sys.exit("bmc.py listens on loopback only")
    with open(args.password_file, encoding="utf-8") as f:
        args.password = f.read().rstrip("\r\n")
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    server.daemon_threads = True
    server.cfg = args
    server.machine = Machine(args)
    scheme = "http"
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    if args.pid_file:
        with open(args.pid_file, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    real_port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{real_port}\n")
        os.replace(tmp, args.port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log(f"{scheme}://{host}:{real_port} system {args.system}: serving")
    server.serve_forever()


if __name__ == "__main__":
    main()
