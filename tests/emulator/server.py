"""ferry's local AWS emulator: moto in server mode plus the additions in additions/.

Usage: server.py [--port N] [--config FILE] [--verbose]
Binds 127.0.0.1 only. Prints `FERRY_EMULATOR_ENDPOINT=http://127.0.0.1:PORT` once it accepts
connections; stops on SIGTERM/SIGINT, and when the process that started it goes away if
FERRY_EMULATOR_PARENT_PID names that process (so a test run that dies leaves nothing behind).
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# moto would otherwise load hundreds of public AMIs into every (account, region) it touches.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def _watch_parent(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        if os.getppid() != pid:
            os._exit(0)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("FERRY_EMULATOR_PORT", 0)))
    parser.add_argument("--config", help="JSON file of configuration (see README)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    if args.config:
        os.environ["FERRY_EMULATOR_CONFIG"] = args.config

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    import additions
    from additions import state, traffic

    state.load_startup_config()
    additions.install()

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    app = traffic.Traffic(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    server.daemon_threads = True  # type: ignore[attr-defined]

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    parent = os.environ.get("FERRY_EMULATOR_PARENT_PID")
    if parent:
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()

    port = server.server_address[1]
    print(f"FERRY_EMULATOR_ENDPOINT=http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
