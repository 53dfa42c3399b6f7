"""A screenshot of the page ``finetune-kit serve`` shows at ``/``, after a prediction, taken with
headless Chromium (``apt-get install chromium``).

The model is served on a free port; the page is opened with the form's fields in its query
string, which fills the form and predicts at once; the PNG is written; the server is stopped.

    python benchmarks/serve_page_screenshot.py runs/sst2 --text "a gripping, beautifully acted film" --output sst2.png
    python benchmarks/serve_page_screenshot.py runs/wnut --text "Taylor Swift played Madison Square Garden" --output ner.png
    python benchmarks/serve_page_screenshot.py runs/squad --field question="Who sat?" \\
        --field context="The cat sat on the mat." --output qa.png

Fields by task: ``text`` (and ``text_pair`` for pairs), ``question`` and ``context`` for question
answering, ``question`` and ``choices`` (one per line) for multiple choice, ``input`` (one input as
JSON) for any other task.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server stopped (exit status {process.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the server did not answer within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="A model directory written by `finetune-kit train`.")
    parser.add_argument("--output", required=True, type=Path, help="The PNG to write.")
    parser.add_argument("--text", help="The text field (a shortcut for --field text=...).")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="A field of the form.")
    parser.add_argument("--window-size", default="1000,900", help="WIDTH,HEIGHT of the browser window, in pixels.")
    parser.add_argument("--browser", default=None, help=f"The browser binary (default: the first of {BROWSERS}).")
    parser.add_argument("--serve-option", action="append", default=[], metavar="OPTION",
                        help="An option for `finetune-kit serve`, e.g. --serve-option=--precision=bf16.")
    args = parser.parse_args()

    browser = args.browser or next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        sys.exit("no Chromium found; install it (apt-get install chromium) or pass --browser")
    fields = dict(field.split("=", 1) for field in args.field)
    if args.text is not None:
        fields["text"] = args.text
    if not fields:
        sys.exit("give the form's fields: --text TEXT or --field NAME=VALUE")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "finetune_kit.cli", "serve", args.model_dir, "--port", str(port),
                               *args.serve_option], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url, server)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--virtual-time-budget=20000", f"--window-size={args.window_size}",
                        f"--screenshot={args.output.resolve()}", f"{url}/?{urlencode(fields)}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{args.output} written")


if __name__ == "__main__":
    main()
